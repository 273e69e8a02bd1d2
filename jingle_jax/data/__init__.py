"""The latent dataset: its format, writer and reader, and the batches training and inference read from it."""
