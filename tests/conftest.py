"""Shared fixtures: the tiny model config, and training runs on a tiny
dataset (the reference run computed once per session)."""

import os
import shutil
import tempfile

# Before jax is imported: XLA's optimisation level 0 halves CPU compile
# times, which dominate these tests. Subprocesses inherit it.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_backend_optimization_level=0').strip()
# The commands' compilation cache ('auto') in a folder of this session, not
# the user's: the tests share what they compile, and leave nothing behind.
os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
    prefix='jingle_jax_test_cache_')

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import pytest

from jingle_jax.config import run_config
from jingle_jax.data import latents
import latent_data
import train_config
from training_runs import run
from training_runs import SONG_FRAMES
from training_runs import with_devices


@pytest.fixture(scope='session')
def tiny_config():
  """The training-test recipe with 16 channels: compiles in seconds on CPU.

  A run_config.Config, frozen: a test that needs other values takes
  train_config.changed(tiny_config, {...}).
  """
  return train_config.changed(
      run_config.parse(train_config.get_config()),
      {'num_frames': 32, 'per_device_batch_size': 2, 'model.latent_dim': 16})


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """4 train songs (16 pairs: 4 steps per epoch) and 2 val songs (8 pairs)."""
  path = tmp_path_factory.mktemp('latents')
  rng = np.random.default_rng(0)
  latent_data.write_dataset(path, {
      f'song{i}': (split, rng.normal(size=(SONG_FRAMES, latents.LATENT_DIM))
                   .astype(np.float32))
      for i, split in enumerate(['train'] * 4 + ['val'] * 2)})
  return str(path)


@pytest.fixture(scope='session')
def env(tmp_path_factory):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('cache')),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return with_devices(env, 1)


@pytest.fixture(scope='session')
def one_device(tmp_path_factory, env, data_dir):
  """The reference run: 1 device x 4 pairs, 8 steps."""
  workdir = tmp_path_factory.mktemp('one_device')
  run(env, workdir, data_dir)
  return workdir


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
