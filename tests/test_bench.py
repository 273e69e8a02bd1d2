"""The step benchmark's JSON line, data-parallel over four CPU devices, and
its seed step exported for CUDA."""

import functools
import json
import os
import subprocess
import sys

import jax

from configs import creative
from jingle_jax import bench as bench_lib
from jingle_jax.config import run_config
from jingle_jax.training import train_step
import train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The conftest's tiny model: 16 channels, 32 frames, 2 pairs per device.
TINY = ('--config.model.latent_dim=16', '--config.num_frames=32',
        '--config.per_device_batch_size=2')


def bench(*flags):
  # Optimisation level 0 halves compile times; what is checked stays.
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=4 '
             '--xla_backend_optimization_level=0',
             JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.bench', '--config',
       os.path.join(ROOT, 'tests', 'train_config.py'), *TINY, *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_step_benchmark_over_four_devices(tmp_path):
  # The preset's fields but those given as flags (frames, batch, remat).
  timed = bench('--steps', '2', f'--profile={tmp_path}', '--preset',
                'cpu-small', '--config.model.remat=layers')
  assert timed['num_frames'] == 32 and timed['preset'] == 'cpu-small'
  assert timed['num_devices'] == 4 and timed['batch_size'] == 8
  assert timed['timed_steps'] == 2
  assert timed['pairs_per_s'] > 0 and timed['median_step_ms'] > 0
  assert timed['flops_per_step'] > 0 and timed['xla_flops_per_step'] > 0
  assert timed['fusions'] > 0
  assert timed['mfu'] is None  # no known peak for a CPU
  assert (timed['attention'], timed['remat']) == ('xla', 'layers')
  top_ops = (tmp_path / 'top_ops.txt').read_text().splitlines()
  assert 'ops and' in top_ops[0] and '(2 steps)' in top_ops[0]
  assert len(top_ops) > 10  # the costliest ops, each with its time
  assert 0 < timed['activation_bytes'] < timed['planned_memory_bytes']



def test_activation_bytes_count_what_remat_does_not_keep(tiny_config):
  """Without remat the backward pass keeps each attention's weights: 2
  stages x [2, 2 heads, 32, 32] and the mask generator's [4, 2 heads, 32,
  32], float32, at least once each."""
  def kept(remat):
    config = train_config.changed(tiny_config, {'model.remat': remat})
    state = jax.eval_shape(functools.partial(
        train_step.create_train_state, config), jax.random.key(0))
    return bench_lib.activation_bytes(config, state, jax.random.key(1))

  weights_bytes = (2 * 2 * 32 * 32 + 4 * 2 * 32 * 32) * 4
  assert kept('none') - kept('layers') >= weights_bytes


def test_the_seed_step_as_a_gpu_traces_it_lowers_for_cuda(monkeypatch):
  """The seed recipe's step, EnCodec's decoder in it, exported for CUDA
  with the choices a GPU's backend makes at trace time (bfloat16, the fused
  attention's Triton kernels): what benchmarks/gpu.sh compiles."""
  config = run_config.parse(creative.get_config())
  assert config.loss.uses_audio  # the spectral outlier term decodes
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  args = bench_lib.step_argument_shapes(config)
  triton = '__gpu$xla.gpu.triton'
  exported = jax.export.export(
      jax.jit(functools.partial(train_step.train_step, config=config,
                                total_steps=2)),
      platforms=('cuda',),
      disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(triton)])(
          *args)
  module = exported.mlir_module()
  # Forward, key and query gradients: each stage's scanned layer and the
  # mask generator's cross-attention.
  assert module.count(f'@{triton}(') == 3 * (config.model.num_stages + 1)
  assert 'xbf16>' in module and args[1]['input'].dtype == 'float16'
