"""Shared fixtures of the model and train-step tests."""

import ml_collections
import pytest

from configs.creative import get_config


@pytest.fixture(scope='session')
def tiny_config():
  """The seed recipe shrunk to compile and run in seconds on CPU.

  Frozen, so tests cannot change it for each other; a test that needs
  changes takes ml_collections.ConfigDict(tiny_config), a mutable copy.
  """
  config = get_config()
  config.num_frames = 32
  config.per_device_batch_size = 2
  model = config.model
  model.latent_dim = 16
  model.num_stages = 2
  model.num_layers = 1
  model.num_heads = 2
  model.mask_hidden = 16
  model.mask_heads = 2
  return ml_collections.FrozenConfigDict(config)
