"""Training runs for tests: the CLI in subprocesses on a tiny dataset.

Device counts are fixed when jax starts, and killing a run must not kill the
tests. Runs share a persistent compilation cache (conftest's `env`), so a
program compiles once per device layout.
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np

from jingle_jax.training import run_log
from jingle_jax.training import step_timing

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(TESTS_DIR, 'train_config.py')
SONG_FRAMES = 40  # 4 pairs of 2 x 8 frames per song


def command(workdir, data_dir, *flags):
  return [sys.executable, '-m', 'jingle_jax.train', f'--config={CONFIG}',
          f'--workdir={workdir}', f'--config.data.dir={data_dir}', *flags]


def with_devices(env, count):
  """`env` for a process with `count` CPU devices.

  Single-threaded Eigen keeps XLA's CPU results independent of thread
  timing on a loaded machine; the optimisation level changes nothing the
  tests compare and halves compile times.
  """
  return dict(env, XLA_FLAGS='--xla_cpu_multi_thread_eigen=false '
              '--xla_backend_optimization_level=0 '
              f'--xla_force_host_platform_device_count={count}')


def run(env, workdir, data_dir, *flags, devices=1, check=True):
  env = with_devices(env, devices)
  return subprocess.run(command(workdir, data_dir, *flags), env=env,
                        check=check, capture_output=not check, text=True)


def records(workdir, split='train'):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  return [r for r in run_log.read_records(path) if r['split'] == split]


def losses(workdir, split='train'):
  return np.array([r['loss'] for r in records(workdir, split)])


def checkpoint_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def wait_until(condition, process):
  while not condition():
    assert process.poll() is None, 'the run ended too early'
    time.sleep(0.02)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def log_lines(stderr: str) -> list[str]:
  """The lines of a run's stderr, less the progress bar's."""
  return [line for line in stderr.replace('\r', '\n').splitlines()
          if line.strip() and '%|' not in line]


def strip_timings(step_records):
  return [{name: value for name, value in record.items()
           if name not in step_timing.METRICS} for record in step_records]
