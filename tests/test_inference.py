"""A trained model behind another masking, and run batch by batch."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from jingle_jax import inference
from jingle_jax import input_pipeline
from jingle_jax import train_step
import train_config

IDENTITY = input_pipeline.Normaliser(np.zeros(16, np.float32),
                                     np.ones(16, np.float32))


def trained_model(config, variables):
  return inference.TrainedModel(config, variables, step=7, updates=6,
                                normaliser=IDENTITY)


def test_another_masking_swaps_the_masks_and_keeps_the_cascade(tiny_config):
  params = {'cascade_stages_0': {'w': 1}, 'creative_agent': {'w': 2}}
  variables = {'params': params, 'batch_stats': {'cascade_stages_0': 3}}
  model = trained_model(tiny_config, variables)
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
  model = trained_model(tiny_config, {'params': state.params,
                                      'batch_stats': state.batch_stats})
  rng = np.random.default_rng(0)
  inputs, targets = rng.normal(size=(2, 5, 32, 16)).astype(np.float32)
  output, input_mask, target_mask = model.run(inputs, targets, batch_size=2)
  assert output.shape == input_mask.shape == target_mask.shape == (5, 32, 16)
  # Each pair's result is its own: the same as run alone.
  alone = model.run(inputs[4:], targets[4:], batch_size=2)
  np.testing.assert_allclose(output[4:], alone[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(input_mask[4:], alone[1], rtol=1e-5, atol=1e-6)
