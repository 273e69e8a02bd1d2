"""Importing original PyTorch checkpoints: parity with a PyTorch reference."""

import copy
import argparse
import functools
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import torch

from configs.creative import get_config
from jingle_jax import checkpoints
from jingle_jax import convert_torch
from jingle_jax import losses
from jingle_jax import train_step
from jingle_jax.models import LatentDiscriminator
from jingle_jax.models import StyleDiscriminator
import torch_reference as reference

FRAMES = 24
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4  # max abs difference in float32


@pytest.fixture(autouse=True)
def float32_matmuls():
  """TF32 matmuls on GPUs would exceed the tolerance."""
  with jax.default_matmul_precision('float32'):
    yield


@pytest.fixture(name='config')
def float32_config(tiny_config):
  """The tiny config computing in float32 on every backend."""
  config = ml_collections.ConfigDict(copy.deepcopy(tiny_config))
  config.model.compute_dtype = 'float32'
  return ml_collections.FrozenConfigDict(config)


def reference_model(config, num_stages, use_creative_agent, seed=0):
  """A PyTorch model of the config's widths with perturbed weights, its
  spectral-norm vectors refreshed by training-mode forwards as in training."""
  m = config.model
  torch.manual_seed(seed)
  model = reference.CascadeTransformer(
      m.latent_dim, num_stages, m.num_layers, m.num_heads, dropout=0.0,
      use_creative_agent=use_creative_agent, mask_hidden=m.mask_hidden,
      mask_heads=m.mask_heads)
  reference.perturb_(model, seed)
  with torch.no_grad():
    model.train()
    for _ in range(3):
      model(*map(to_torch, latents(config, seed)))
  return model.eval()


def latents(config, seed):
  """(inputs, targets) float32 [B, T, D], the Flax layout."""
  rng = np.random.default_rng(seed)
  shape = (2, FRAMES, config.model.latent_dim)
  return (rng.standard_normal(shape, np.float32),
          rng.standard_normal(shape, np.float32))


def to_torch(x):  # [B, T, D] -> [B, D, T]
  return torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 1, 2)))


def from_torch(x):
  return np.swapaxes(x.detach().numpy(), 1, 2)


def convert_saved(tmp_path, model, config, **save_kwargs):
  path = tmp_path / 'checkpoint.pt'
  reference.save_checkpoint(path, model, epoch=7, best_val_loss=0.25,
                            **save_kwargs)
  return convert_torch.convert(convert_torch.load_torch_checkpoint(path),
                               config, str(path))


def flax_forward(config, state, inputs, targets, *, train=False):
  """(CascadeOutput, batch_stats after the call)."""
  model = train_step.build_model(config)
  apply = jax.jit(functools.partial(model.apply, train=train,
                                    mutable=['batch_stats']))
  out, updated = apply({'params': state.params,
                        'batch_stats': state.batch_stats}, inputs, targets)
  return out, updated['batch_stats']


def assert_close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected),
                             rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize('num_stages, use_creative_agent, distributed', [
    (2, True, False), (3, True, True), (2, False, True), (3, False, False)])
def test_evaluation_matches_pytorch(tmp_path, config, num_stages,
                                    use_creative_agent, distributed):
  model = reference_model(config, num_stages, use_creative_agent)
  config, state = convert_saved(tmp_path, model, config,
                                distributed=distributed)
  # The keys, not the config (2 stages, agent on), decide the architecture.
  assert config.model.num_stages == num_stages
  assert config.model.use_creative_agent == use_creative_agent

  inputs, targets = latents(config, seed=1)
  with torch.no_grad():
    expected = model(to_torch(inputs), to_torch(targets))
  out, _ = flax_forward(config, state, inputs, targets)
  assert_close(out.output, from_torch(expected['output']))
  assert_close(out.input_mask, from_torch(expected['input_mask']))
  assert_close(out.target_mask, from_torch(expected['target_mask']))
  if use_creative_agent:
    metrics = losses.mask_metrics(out.input_mask, out.target_mask)
    assert_close(metrics['mask_reg'], expected['mask_reg'])
    assert_close(metrics['balance'], expected['balance'])
    with torch.no_grad():
      expected_scores = model.creative_agent.discriminator(to_torch(inputs))
    scores = StyleDiscriminator().apply(
        {'params': state.params['creative_agent']['discriminator']}, inputs)
    for actual, wanted in zip(scores, expected_scores):
      assert_close(actual, wanted)


def test_training_forward_matches_pytorch_power_iteration(tmp_path,
                                                          config):
  config = ml_collections.ConfigDict(config)
  config.model.dropout = config.model.attention_dropout = 0.0
  config.model.anti_cheating = 0.0
  model = reference_model(config, 2, True, seed=3)
  config, state = convert_saved(tmp_path, model, config)
  inputs, targets = latents(config, seed=4)
  with torch.no_grad():
    expected = model.train()(to_torch(inputs), to_torch(targets))
  out, batch_stats = flax_forward(config, state, inputs, targets, train=True)
  assert_close(out.output, from_torch(expected['output']))
  for stage in range(2):
    projection = model.cascade_stages[stage].output_proj
    updated = batch_stats[f'cascade_stages_{stage}']['output_proj']
    assert_close(updated['u'], projection.weight_u)
    assert_close(updated['v'], projection.weight_v)
    # The vectors did move: the comparison is of one fresh iteration.
    assert not np.allclose(
        updated['u'], state.batch_stats[f'cascade_stages_{stage}'][
            'output_proj']['u'])


def test_gan_discriminator_matches_pytorch(tmp_path, config):
  model = reference_model(config, 2, True)
  torch.manual_seed(5)
  discriminator = reference.perturb_(
      reference.LatentDiscriminator(config.model.latent_dim), 5).eval()
  _, state = convert_saved(tmp_path, model, config,
                           discriminator=discriminator, distributed=True)
  inputs, _ = latents(config, seed=6)
  with torch.no_grad():
    expected = discriminator(to_torch(inputs))
  logits = LatentDiscriminator().apply({'params': state.disc_params}, inputs,
                                       train=False)
  assert_close(logits, expected)


def numpy_checkpoint(model, **extra):
  return {'model_state_dict': {key: value.numpy() for key, value in
                               model.state_dict().items()}, **extra}


def test_missing_and_unknown_keys_are_listed(config):
  checkpoint = numpy_checkpoint(reference_model(config, 2, True))
  state_dict = checkpoint['model_state_dict']
  del state_dict['cascade_stages.1.output_proj.weight_u']
  del state_dict['cascade_stages.0.pos_encoding.pe']
  state_dict['cascade_stages.1.extra_norm.weight'] = np.ones(3, np.float32)
  with pytest.raises(convert_torch.ConversionError) as error:
    convert_torch.convert(checkpoint, config, 'old.pt')
  message = str(error.value)
  assert message.startswith('old.pt model_state_dict')
  for key in ('cascade_stages.1.output_proj.weight_u',
              'cascade_stages.0.pos_encoding.pe',
              'cascade_stages.1.extra_norm.weight'):
    assert key in message


def test_shapes_must_fit_the_config(config):
  checkpoint = numpy_checkpoint(reference_model(config, 2, True))
  config = ml_collections.ConfigDict(config)
  config.model.mask_hidden = 32
  with pytest.raises(convert_torch.ConversionError,
                     match=r'mask_generator\.input_analyzer\.0\.weight: '
                     r'\(16, 16, 3\) in the checkpoint, \(32, 16, 3\)'):
    convert_torch.convert(checkpoint, config)


def test_gan_weights_need_the_gan_on(config):
  model = reference_model(config, 2, False)
  checkpoint = numpy_checkpoint(model, discriminator_state_dict={})
  config = ml_collections.ConfigDict(config)
  config.loss.gan_weight = 0.0
  with pytest.raises(convert_torch.ConversionError, match='loss.gan_weight'):
    convert_torch.convert(checkpoint, config)


def test_positions_must_be_the_sinusoids(config):
  checkpoint = numpy_checkpoint(reference_model(config, 2, False))
  checkpoint['model_state_dict']['cascade_stages.1.pos_encoding.pe'][
      0, 5, 0] += 0.1
  with pytest.raises(convert_torch.ConversionError,
                     match=r'cascade_stages\.1\.pos_encoding\.pe differs'):
    convert_torch.convert(checkpoint, config)


def test_pickled_objects_need_allow_pickle(tmp_path):
  path = tmp_path / 'with_args.pt'
  torch.save({'model_state_dict': {'w': torch.ones(2)},
              'args': argparse.Namespace(lr=1e-4)}, path)
  with pytest.raises(convert_torch.ConversionError, match='--allow-pickle'):
    convert_torch.load_torch_checkpoint(path)
  loaded = convert_torch.load_torch_checkpoint(path, allow_pickle=True)
  np.testing.assert_array_equal(loaded['model_state_dict']['w'], [1.0, 1.0])

  torch.save(torch.ones(2), tmp_path / 'tensor.pt')
  with pytest.raises(convert_torch.ConversionError, match='not a checkpoint'):
    convert_torch.load_torch_checkpoint(tmp_path / 'tensor.pt')


def test_seed_architecture_converts_with_spec_keys():
  torch.manual_seed(0)
  model = reference.CascadeTransformer(num_stages=3)  # SPEC sizes: 3 x 6
  assert sum(p.numel() for p in model.parameters()) == 27_449_410
  config, state = convert_torch.convert(numpy_checkpoint(model), get_config())
  assert sum(leaf.size for leaf in jax.tree.leaves(state.params)) == (
      27_449_410)
  torch_layer = model.cascade_stages[2].transformer.layers[5]
  np.testing.assert_array_equal(
      state.params['cascade_stages_2']['layers_5']['self_attn'][
          'in_proj_kernel'], torch_layer.self_attn.in_proj_weight.detach().T)
  assert config.model.max_len == 2000


def test_command_writes_a_workdir_that_training_restores(tmp_path,
                                                         config):
  model = reference_model(config, 2, False)
  path = tmp_path / 'checkpoint_epoch_7.pt'
  reference.save_checkpoint(path, model, epoch=7, best_val_loss=0.25,
                            distributed=True)
  m = config.model
  sizes = [f'--config.model.{name}={m[name]}' for name in (
      'latent_dim', 'num_layers', 'num_heads', 'mask_hidden', 'mask_heads')]
  workdir = tmp_path / 'converted'
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.convert_torch', str(path),
       '--config', os.path.join(REPO, 'configs', 'creative.py'), *sizes,
       '--out-dir', str(workdir), '--steps-per-epoch', '3'],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  # The seed config has 3 stages and the agent on; the keys say otherwise.
  assert ('--config.model.num_stages=2 --config.model.use_creative_agent='
          'False') in result.stderr

  config, state, step = checkpoints.load_for_inference(workdir, 'latest')
  assert step == 7 * 3 and int(state.step) == 7 * 3
  assert config.model.num_stages == 2
  assert not config.model.use_creative_agent
  _, expected = convert_torch.convert(
      convert_torch.load_torch_checkpoint(path), config)
  jax.tree.map(np.testing.assert_array_equal,
               (state.params, state.batch_stats),
               (expected.params, expected.batch_stats))
  tx, _ = train_step.make_optimizers(config)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state,
               tx.init(state.params))  # fresh AdamW moments

  with pytest.raises(convert_torch.ConversionError, match='holds checkpoints'):
    convert_torch.write_workdir(workdir, config, state, step=0)

  # Sampling one pair takes raw latents, as the original did, with no dataset
  # and no validation loss behind the checkpoint.
  inputs, targets = latents(config, seed=2)
  np.save(tmp_path / 'in.npy', inputs[0])
  np.save(tmp_path / 'tgt.npy', targets[0])
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.sample', '--workdir', str(workdir),
       '--input', str(tmp_path / 'in.npy'), '--target',
       str(tmp_path / 'tgt.npy'), '--out-dir', str(tmp_path / 'sample')],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  with torch.no_grad():
    expected_output = model(to_torch(inputs[:1]), to_torch(targets[:1]))
  assert_close(np.load(tmp_path / 'sample' / 'output.npy'),
               from_torch(expected_output['output'])[0])
