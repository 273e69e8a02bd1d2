"""Config checks in one place, and recorded configs brought up to date."""

import copy
import re

import jax.numpy as jnp
import ml_collections
import pytest

from configs import creative
from jingle_jax import run_config


@pytest.fixture
def config():
  return creative.get_config()


@pytest.mark.parametrize('field, value, message', [
    ('remat', 'all', "config.model.remat is 'all', not one of"),
    ('fixed_masking', 'random', "fixed_masking is 'random', not none or one"),
    ('fixed_masking', 'temporal', 'needs config.model.use_creative_agent'),
    ('compute_dtype', 'float64', 'compute_dtype must be auto, float32 or'),
    ('num_layers', 0, 'config.model.num_layers must be at least 1'),
])
def test_model_fields_are_checked_naming_the_field(config, field, value,
                                                   message):
  config.model[field] = value
  with pytest.raises(run_config.ConfigError, match=message):
    run_config.model_config(config)


def test_model_config_follows_the_config(config):
  config.model.num_stages = 2
  config.model.compute_dtype = 'bfloat16'
  model = run_config.model_config(config)
  assert (model.num_stages, model.num_layers, model.dtype) == (
      2, 6, jnp.bfloat16)
  assert run_config.compute_dtype('auto') == jnp.float32  # tests run on CPU


@pytest.mark.parametrize('field, value, message', [
    ('num_frames', 0, 'config.num_frames must be at least 1'),
    ('eval_every_steps', 0, 'config.eval_every_steps must be -1 or'),
    ('window_hop', -1, 'config.window_hop must not be negative'),
    ('num_frames', 2001, 'num_frames (2001) exceeds config.model.max_len'),
    ('data_dir', '', 'config.data_dir is empty'),
])
def test_training_fields_are_checked_naming_the_field(config, field, value,
                                                      message):
  config.data_dir = '/data'
  run_config.check_training(config, 'workdir')
  with pytest.raises(run_config.ConfigError, match='no workdir'):
    run_config.check_training(config, '')
  config[field] = value
  with pytest.raises(run_config.ConfigError, match=re.escape(message)):
    run_config.check_training(config, 'workdir')


def test_configs_recorded_by_older_versions_get_the_fields_they_had(config):
  old = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  for block, field in (('model', 'remat'), ('model', 'disc_dropout'),
                       ('loss', 'overlap_weight'), ('optim', 'disc_b1')):
    del old[block][field]
  del old['normalise_latents']
  upgraded = run_config.upgrade(old)
  assert upgraded.normalise_latents  # they normalised
  assert upgraded.model.remat == 'none' and upgraded.model.disc_dropout == 0.3
  assert upgraded.loss.overlap_weight == 10.0  # the published code's
  assert upgraded.optim.disc_b1 == 0.9  # optax's default then
  assert 'remat' not in old.model  # a copy
  assert run_config.upgrade(config).to_dict() == config.to_dict()
