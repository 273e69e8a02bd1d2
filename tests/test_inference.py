"""A trained model behind another masking, and run batch by batch."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from jingle_jax.data import latent_space
from jingle_jax.data import latents
from jingle_jax.inference import trained_model
from jingle_jax.training import train_step
import train_config


def model_of(config, variables, space=None):
  return trained_model.TrainedModel(config, variables, step=7, updates=6,
                                space=space or latent_space.identity(16))


def test_another_masking_swaps_the_masks_and_keeps_the_cascade(tiny_config):
  params = {'cascade_stages_0': {'w': 1}, 'creative_agent': {'w': 2}}
  variables = {'params': params, 'batch_stats': {'cascade_stages_0': 3}}
  model = model_of(tiny_config, variables)
  assert model.with_masking('creative_agent') is model
  baseline = model.with_masking('energy')
  assert not baseline.config.model.use_creative_agent
  assert baseline.config.model.fixed_masking == 'energy'
  assert tiny_config.model.use_creative_agent  # a copy was changed
  assert baseline.variables == {'params': {'cascade_stages_0': {'w': 1}},
                                'batch_stats': {'cascade_stages_0': 3}}
  assert (baseline.step, baseline.updates) == (7, 6)
  with pytest.raises(ValueError, match="unknown masking 'random'"):
    model.with_masking('random')
  no_agent = train_config.changed(tiny_config,
                                  {'model.use_creative_agent': False})
  with pytest.raises(ValueError, match='use_creative_agent'):
    dataclasses.replace(model, config=no_agent).with_masking('none')


def test_run_covers_every_pair_in_batches_of_one_shape(tiny_config):
  state = jax.jit(functools.partial(train_step.create_train_state,
                                    tiny_config))(jax.random.key(0))
  model = model_of(tiny_config, {'params': state.params,
                                      'batch_stats': state.batch_stats})
  rng = np.random.default_rng(0)
  inputs, targets = rng.normal(size=(2, 5, 32, 16)).astype(np.float16)
  run = model.run(inputs, targets, batch_size=2)
  for name in ('output', 'input_mask', 'target_mask', 'input', 'target'):
    assert run[name].shape == (5, 32, 16) and run[name].dtype == np.float32
  np.testing.assert_array_equal(run['input'], inputs.astype(np.float32))
  # Each pair's result is its own: the same as run alone.
  alone = model.run(inputs[4:], targets[4:], batch_size=2)
  np.testing.assert_allclose(run['output'][4:], alone['output'], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(run['input_mask'][4:], alone['input_mask'],
                             rtol=1e-5, atol=1e-6)


def test_run_normalises_and_checks_the_raw_latents(tiny_config):
  state = jax.jit(functools.partial(train_step.create_train_state,
                                    tiny_config))(jax.random.key(0))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  rng = np.random.default_rng(1)
  mean = rng.normal(size=16).astype(np.float32)
  std = rng.uniform(0.5, 2.0, 16).astype(np.float32)
  space = latent_space.LatentSpace(mean=mean, std=std, check_mean=mean,
                                   check_scale=std)
  model = model_of(tiny_config, variables, space)
  inputs, targets = (rng.normal(size=(2, 3, 32, 16)) * std + mean).astype(
      np.float16)
  run = model.run(inputs, targets, batch_size=2)
  np.testing.assert_allclose(run['target'],
                             (targets.astype(np.float32) - mean) / std,
                             rtol=1e-6)
  targets[2, 5, 9] = np.nan
  with pytest.raises(latents.LatentDataError,
                     match='pair 2, target clip: frame 5, channel 9'):
    model.run(inputs, targets, batch_size=2)
  targets[2, 5, 9] = 0
  inputs[1, 30, 0] = mean[0] + 2000 * std[0]  # beyond OUTLIER_STDS
  with pytest.raises(latents.LatentDataError,
                     match='pair 1, input clip: frame 30, channel 0'):
    model.run(inputs, targets, batch_size=2)
  faults = []
  with pytest.raises(ZeroDivisionError):
    model.run(inputs, targets, batch_size=2,
              fault_error=lambda fault: faults.append(fault) or 1 / 0)
  np.testing.assert_array_equal(faults, [[1, 30 * 16]])
