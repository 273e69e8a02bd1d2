"""The training step as XLA's GPU compiler builds it, on a machine without a
GPU: the kernels it writes and launches.

  pip install "jax-cuda13-plugin==$JAX" "jax-cuda13-pjrt==$JAX"  # jax's version
  JAX_PLATFORMS=cpu JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 \\
      python -m benchmarks.gpu_kernels --config configs/creative.py \\
      [--config.loss.spectral_outlier_weight=0] [--hlo FILE]

jax's CUDA plugin compiles for a GPU described by --target (a
GpuTargetConfigProto; default an H100) without the GPU, its driver or
CUDA's libraries: no autotuning, so where XLA would choose between
equivalent GEMM kernels by timing them it takes its default. The step runs
on random latents of the config's shapes, one device's batch, EnCodec's
decoder in it when an audio term is weighted. The project's trace-time
choices (bfloat16 compute, the attention's Triton kernels) ask
jax.default_backend(), which answers 'gpu' while the step is traced.

Prints one JSON line: the kernels written in the compiled program and
launched per step (profiling.gpu_kernels: each fusion, library call and
copy; a loop's body times its trip count), by instruction, and the loops.
"""

import functools
import json
import os
import time

from absl import flags
import jax
from jax.experimental import topologies
from ml_collections import config_flags

from jingle_jax import bench
from jingle_jax import cli
from jingle_jax.config import run_config
from jingle_jax.core import files
from jingle_jax.perf import profiling
from jingle_jax.training import train_step

TARGETS = os.path.join(os.path.dirname(__file__), 'gpu_targets')


def define_flags():
  """The command line (defined only when run as a program)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.')
  flags.DEFINE_string('target', os.path.join(TARGETS, 'h100_sxm.txtpb'),
                      'The GPU: an XLA GpuTargetConfigProto, text format.')
  flags.DEFINE_string('hlo', None, 'Also write the compiled HLO here.')


def gpu_device(target_path: str):
  """A compile-only device of the GPU that target_path describes."""
  with open(target_path, encoding='utf-8') as f:
    target = f.read()
  try:
    topology = topologies.get_topology_desc(
        platform='cuda', target_config=target, topology='1x1x1')
  except (NotImplementedError, RuntimeError) as e:
    raise ValueError(
        f'no CUDA compiler to compile for {target_path} ({e}): install '
        'jax-cuda13-plugin and jax-cuda13-pjrt of jax\'s version, and run '
        'with JAX_PLATFORMS=cpu JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1') from None
  return topology.devices[0]


def run(flag_values):
  config = run_config.parse(flag_values.config)
  device = gpu_device(flag_values.target)
  sharding = jax.sharding.SingleDeviceSharding(device)
  step = jax.jit(functools.partial(train_step.train_step, config=config,
                                   total_steps=config.num_train_steps),
                 donate_argnums=train_step.donated_arguments('gpu'))
  default_backend = jax.default_backend
  jax.default_backend = lambda: 'gpu'
  try:
    arguments = bench.step_argument_shapes(config, sharding)
    start = time.perf_counter()
    traced = step.trace(*arguments)
  finally:
    jax.default_backend = default_backend
  hlo = traced.lower().compile().as_text()
  compile_s = time.perf_counter() - start
  if flag_values.hlo:
    files.write_text(flag_values.hlo, hlo)
  kernels = profiling.gpu_kernels(hlo)
  print(json.dumps({
      'target': device.device_kind, 'batch_size': config.per_device_batch_size,
      'num_frames': config.num_frames, 'compile_s': round(compile_s, 1),
      **kernels}))


if __name__ == '__main__':
  cli.run('benchmarks.gpu_kernels', run, define_flags, required=['config'])
