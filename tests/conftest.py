"""Shared fixtures of the model and train-step tests."""

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
import pytest

from jingle_jax.config import run_config
import train_config


@pytest.fixture(scope='session')
def tiny_config():
  """The training-test recipe with 16 channels: compiles in seconds on CPU.

  A run_config.Config, frozen: a test that needs other values takes
  train_config.changed(tiny_config, {...}).
  """
  return train_config.changed(
      run_config.parse(train_config.get_config()),
      {'num_frames': 32, 'per_device_batch_size': 2, 'model.latent_dim': 16})


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
