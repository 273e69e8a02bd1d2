"""The PyTorch side of Jingle-JAX: EnCodec's encoder over a folder of songs.

Run it with OMP_WAIT_POLICY=PASSIVE (run_tpu_or_gpu.sh sets it): OpenMP's
default of spinning idle threads made the encoder 1.7x slower whenever the
CPU was shared (docs/BENCHMARKS.md).
"""
