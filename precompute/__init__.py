"""The PyTorch side of Jingle-JAX: EnCodec encoding and decoding.

Set before torch loads: OpenMP's default of spinning idle threads made the
encoder 1.7x slower whenever the CPU was shared (docs/BENCHMARKS.md).
"""

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
