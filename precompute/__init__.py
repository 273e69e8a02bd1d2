"""The PyTorch side of Jingle-JAX: EnCodec's encoder over a folder of songs.

Its commands set the environment PyTorch's OpenMP needs at their entry
(jingle_jax.cli.TORCH_ENVIRONMENT): started any way, they run alike.
"""
