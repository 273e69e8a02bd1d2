"""Converted original weights: the seed architecture's keys and sizes, and
PyTorch's initialisation reproduced by a fresh Flax model."""

import functools

import flax.traverse_util
import jax
import numpy as np
import pytest
import torch

from jingle_jax.config import run_config
from jingle_jax.models.cascade import unstack_layers
from jingle_jax.training import torch_checkpoint
from jingle_jax.training import train_step
import torch_reference as reference


def test_seed_architecture_converts_with_spec_keys():
  torch.manual_seed(0)
  model = reference.CascadeTransformer(num_stages=3)  # DESIGN.md 4.3: 3 x 6
  assert sum(p.numel() for p in model.parameters()) == 27_449_410
  config, state = torch_checkpoint.convert(reference.numpy_checkpoint(model),
                                           run_config.Config())
  assert sum(leaf.size for leaf in jax.tree.leaves(state.params)) == (
      27_449_410)
  torch_layer = model.cascade_stages[2].transformer.layers[5]
  np.testing.assert_array_equal(  # layer 5 of the stage's stacked layers
      state.params['cascade_stages_2']['layers']['self_attn'][
          'in_proj_kernel'][5],
      torch_layer.self_attn.in_proj_weight.detach().T)
  assert config.model.max_len == 2000


def test_initialisation_is_pytorchs():
  """Every fresh variable is distributed as in the PyTorch model (DESIGN.md 4.5c).

  Compared leaf by leaf with a default-initialised PyTorch model of the seed
  size, converted: constants equal, random draws with the same spread and
  bound, the layers of a stage equal (TransformerEncoder copies one layer),
  spectral-norm vectors of unit norm.
  """
  torch.manual_seed(0)
  config = run_config.Config()
  _, torch_state = torch_checkpoint.convert(
      reference.numpy_checkpoint(reference.CascadeTransformer(num_stages=3)),
      config)
  state = jax.jit(functools.partial(train_step.create_train_state, config))(
      jax.random.key(0))
  # Layer by layer, in PyTorch's layout.
  wanted = flax.traverse_util.flatten_dict(unstack_layers(
      {'params': torch_state.params, 'batch_stats': torch_state.batch_stats}))
  actual = flax.traverse_util.flatten_dict(unstack_layers(
      {'params': state.params, 'batch_stats': state.batch_stats}))
  assert set(actual) == set(wanted)
  for path, value in wanted.items():
    name, value, mine = '/'.join(path), np.asarray(value), np.asarray(
        actual[path])
    if path[0] == 'batch_stats':
      assert np.linalg.norm(mine) == pytest.approx(1.0, rel=1e-5), name
    elif value.size > 1 and np.all(value == value.flat[0]):  # LayerNorm, zeros
      np.testing.assert_array_equal(mine, value, err_msg=name)
    elif value.size >= 1000:
      assert np.std(mine) == pytest.approx(np.std(value), rel=0.05), name
      assert np.abs(mine).max() == pytest.approx(np.abs(value).max(),
                                                 rel=0.05), name
  for stage in range(3):
    layers = unstack_layers(state.params)[f'cascade_stages_{stage}']
    for layer in range(1, 6):
      jax.tree.map(np.testing.assert_array_equal, layers[f'layers_{layer}'],
                   layers['layers_0'])
