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

import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

import train_config


@pytest.fixture(scope='session')
def tiny_config():
  """The training-test recipe with 16 channels: compiles in seconds on CPU.

  Frozen, so tests cannot change it for each other; a test that needs
  changes takes ml_collections.ConfigDict(copy.deepcopy(tiny_config)). The
  deep copy matters: plain ConfigDict copies of one FrozenConfigDict share
  their nested dicts (ml_collections 1.1), so changes would leak.
  """
  config = train_config.get_config()
  config.num_frames = 32
  config.per_device_batch_size = 2
  config.model.latent_dim = 16
  return ml_collections.FrozenConfigDict(config)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
