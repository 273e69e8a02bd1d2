"""The seed recipe shrunk for tests (128 channels; conftest narrows it)."""

import dataclasses

import flax.traverse_util

from configs import creative
from jingle_jax.config import run_config


def get_config():
  config = creative.get_config()
  config.num_frames = 8
  config.per_device_batch_size = 4
  config.num_train_steps = 8
  config.log_every_steps = 1
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.media_pairs = 0  # on in the tests of TensorBoard's media only
  config.loss.spectral_outlier_weight = 0.0  # on in the audio-loss tests only
  model = config.model
  model.num_stages = 2
  model.num_layers = 1
  model.num_heads = 2
  model.mask_hidden = 16
  model.mask_heads = 2
  return config


def changed(config: run_config.Config, fields: dict) -> run_config.Config:
  """`config` with {'model.latent_dim': 16, ...} changed, checked again."""
  values = flax.traverse_util.flatten_dict(dataclasses.asdict(config),
                                           sep='.')
  return run_config.parse(flax.traverse_util.unflatten_dict(
      {**values, **fields}, sep='.'))
