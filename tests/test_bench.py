"""The step benchmark's JSON line, data-parallel over four CPU devices."""

import json
import os
import subprocess
import sys

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

  # --steps 0 compiles only; without remat the backward pass keeps each
  # attention's weights: 2 stages x [2, 2 heads, 32, 32] and the mask
  # generator's [4, 2 heads, 32, 32], float32, at least once each.
  compiled = bench('--steps', '0', '--config.model.remat=none')
  assert compiled['pairs_per_s'] is None and compiled['timed_steps'] == 0
  assert compiled['planned_memory_bytes'] > 0
  weights_bytes = (2 * 2 * 32 * 32 + 4 * 2 * 32 * 32) * 4
  assert (compiled['activation_bytes'] - timed['activation_bytes'] >=
          weights_bytes)

