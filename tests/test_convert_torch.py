"""Importing original PyTorch checkpoints: parity with a PyTorch reference."""

import argparse
import functools
import os
import subprocess
import sys

import flax.traverse_util
import jax
import numpy as np
import optax
import pytest
import torch

from jingle_jax import convert_torch
from jingle_jax.data import latent_space
from jingle_jax.inference import trained_model
from jingle_jax.models import CascadeTransformer
from jingle_jax.models import LatentDiscriminator
from jingle_jax.models import StyleDiscriminator
from jingle_jax.training import losses
from jingle_jax.training import optimizers
from jingle_jax.training import run_dir
from jingle_jax.training import torch_checkpoint
from jingle_jax.training import train_step
import torch_reference as reference
import train_config

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
  return train_config.changed(tiny_config, {'model.compute_dtype': 'float32'})


def reference_model(config, num_stages, use_creative_agent, seed=0):
  """A PyTorch model of the config's widths with perturbed weights, its
  spectral-norm vectors refreshed by training-mode forwards as in training."""
  m, weights = config.model, config.loss
  torch.manual_seed(seed)
  model = reference.CascadeTransformer(
      m.latent_dim, num_stages, m.num_layers, m.num_heads, dropout=0.0,
      use_creative_agent=use_creative_agent, mask_hidden=m.mask_hidden,
      mask_heads=m.mask_heads, mask_reg_weights=(
          weights.overlap_weight, weights.coverage_weight,
          weights.temporal_weight))
  reference.perturb_(model, seed)
  with torch.no_grad():
    model.train()
    for _ in range(3):
      model(*map(to_torch, latents(config, seed)))
  return model.eval()


def latents(config, seed, gain=1.0):
  """(inputs, targets) float32 [B, T, D], the Flax layout."""
  rng = np.random.default_rng(seed)
  shape = (2, FRAMES, config.model.latent_dim)
  return (gain * rng.standard_normal(shape, np.float32),
          gain * rng.standard_normal(shape, np.float32))


def to_torch(x):  # [B, T, D] -> [B, D, T]
  return torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 1, 2)))


def from_torch(x):
  return np.swapaxes(x.detach().numpy(), 1, 2)


def convert_saved(tmp_path, model, config, **save_kwargs):
  path = tmp_path / 'checkpoint.pt'
  reference.save_checkpoint(path, model, epoch=7, best_val_loss=0.25,
                            **save_kwargs)
  return torch_checkpoint.convert(convert_torch.load_torch_checkpoint(path),
                               config, str(path))


def flax_forward(config, state, inputs, targets, *, train=False):
  """(CascadeOutput, batch_stats after the call)."""
  model = CascadeTransformer(config.model)
  apply = jax.jit(functools.partial(model.apply, train=train,
                                    mutable=['batch_stats']))
  out, updated = apply({'params': state.params,
                        'batch_stats': state.batch_stats}, inputs, targets)
  return out, updated['batch_stats']


def assert_close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected),
                             rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize('num_stages, use_creative_agent, distributed, gain', [
    (2, True, False, 1.0), (3, True, True, 0.1), (2, False, True, 1.0),
    (3, False, False, 0.1)])
def test_evaluation_matches_pytorch(tmp_path, config, num_stages,
                                    use_creative_agent, distributed, gain):
  model = reference_model(config, num_stages, use_creative_agent)
  config, state = convert_saved(tmp_path, model, config,
                                distributed=distributed)
  # The keys, not the config (2 stages, agent on), decide the architecture.
  assert config.model.num_stages == num_stages
  assert config.model.use_creative_agent == use_creative_agent

  inputs, targets = latents(config, seed=1, gain=gain)
  with torch.no_grad():
    expected = model(to_torch(inputs), to_torch(targets))
  if num_stages == 3:  # an intermediate stage's scale is clipped
    scales = expected['rms_scale'].numpy()[:, :-1]
    assert np.any((scales == np.float32(0.7)) | (scales == np.float32(1.5)))
  out, _ = flax_forward(config, state, inputs, targets)
  assert_close(out.rms_scale, expected['rms_scale'])
  assert_close(out.output, from_torch(expected['output']))
  assert_close(out.input_mask, from_torch(expected['input_mask']))
  assert_close(out.target_mask, from_torch(expected['target_mask']))
  if use_creative_agent:
    _, metrics = losses.validation_loss(
        out.output, inputs, targets, out.input_mask, out.target_mask,
        config.loss, learned_masks=True)
    assert_close(metrics['mask_reg'], expected['mask_reg'])
    assert_close(metrics['balance'], expected['balance'])
    with torch.no_grad():
      expected_scores = model.creative_agent.discriminator(to_torch(inputs))
    scores = StyleDiscriminator(config.model).apply(
        {'params': state.params['creative_agent']['discriminator']}, inputs)
    for actual, wanted in zip(scores, expected_scores):
      assert_close(actual, wanted)


def test_training_forward_matches_pytorch_power_iteration(tmp_path,
                                                          config):
  config = train_config.changed(config, {
      'model.dropout': 0.0, 'model.attention_dropout': 0.0,
      'model.anti_cheating': 0.0})
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


def step_config(config):
  """The tiny config with every random draw off (dropout, anti-cheating
  noise), so that one training step is a function of the weights and the
  batch, and with reconstruction terms too."""
  return train_config.changed(config, {
      'model.dropout': 0.0, 'model.attention_dropout': 0.0,
      'model.disc_dropout': 0.0, 'model.anti_cheating': 0.0,
      'loss.input_weight': 0.3, 'loss.target_weight': 0.2})


def test_training_step_after_import_matches_pytorch(tmp_path, config):
  """Both AdamW states imported, one step on each side: same weights after.

  Covers the GAN discriminator's update before the generator's adversarial
  term (through the updated discriminator), the loss weights, clipping and
  the optimisers. The PyTorch side after its step is read back through the
  converter, so both are compared in the Flax layout.
  """
  config = step_config(config)
  torch.manual_seed(0)
  model, discriminator, optimizer, disc_optimizer = reference.from_config(
      config)
  reference.perturb_(model, 0)
  reference.perturb_(discriminator, 1)
  batches = [latents(config, seed) for seed in (10, 11, 12)]

  def step_pytorch(inputs, targets):
    reference.training_step(model, discriminator, optimizer, disc_optimizer,
                            to_torch(inputs), to_torch(targets), config)

  def converted(name):
    path = tmp_path / name
    reference.save_checkpoint(path, model, epoch=0, best_val_loss=1.0,
                              discriminator=discriminator,
                              optimizer=optimizer,
                              disc_optimizer=disc_optimizer)
    return torch_checkpoint.convert(convert_torch.load_torch_checkpoint(path),
                                 config, str(path))[1]

  for batch in batches[:2]:  # moments that a fresh state would not have
    step_pytorch(*batch)
  state = converted('before.pt')
  for opt_state in (state.opt_state, state.disc_opt_state):
    assert int(optax.tree.get(opt_state, 'count')) == 2
  inputs, targets = batches[2]
  step_pytorch(inputs, targets)
  expected = converted('after.pt')
  state, metrics = jax.jit(functools.partial(
      train_step.train_step, config=config))(
          state, {'input': inputs, 'target': targets}, jax.random.key(0),
          latent_space.identity(config.model.latent_dim))
  assert float(metrics['skipped']) == 0.0

  def assert_tree_close(actual, wanted, atol):
    flat_actual = flax.traverse_util.flatten_dict(actual)
    for path, value in flax.traverse_util.flatten_dict(wanted).items():
      np.testing.assert_allclose(flat_actual[path], value, rtol=0, atol=atol,
                                 err_msg='/'.join(path))

  # Adam's step is about +-lr wherever the gradient is consistent: 2% of it
  # tells steps apart. The moments compare the gradients themselves.
  assert_tree_close(state.params, expected.params,
                    0.02 * config.optim.learning_rate)
  assert_tree_close(state.disc_params, expected.disc_params,
                    0.02 * config.optim.disc_learning_rate)
  assert_tree_close(state.batch_stats, expected.batch_stats, TOLERANCE)
  for actual, wanted, params in (
      (state.opt_state, expected.opt_state, expected.params),
      (state.disc_opt_state, expected.disc_opt_state, expected.disc_params)):
    actual, wanted = (optimizers.moments(s, params) for s in (actual, wanted))
    assert int(actual[0]) == int(wanted[0]) == 3
    for actual_moment, wanted_moment in zip(actual[1:], wanted[1:]):
      scale = max(float(np.abs(leaf).max())
                  for leaf in jax.tree.leaves(wanted_moment))
      assert_tree_close(actual_moment, wanted_moment, 1e-4 * scale)


def test_optimizer_state_that_does_not_fit_names_the_key(tmp_path, config):
  config = step_config(config)
  model, discriminator, optimizer, disc_optimizer = reference.from_config(
      config)
  reference.training_step(model, discriminator, optimizer, disc_optimizer,
                          *map(to_torch, latents(config, 0)), config)
  path = tmp_path / 'checkpoint.pt'
  reference.save_checkpoint(path, model, epoch=0, best_val_loss=1.0,
                            discriminator=discriminator, optimizer=optimizer,
                            disc_optimizer=disc_optimizer)
  checkpoint = convert_torch.load_torch_checkpoint(path)
  # The moments of conv_layers.3.weight (parameter 2) with a wrong shape.
  entry = checkpoint['disc_optimizer_state_dict']['state'][2]
  entry['exp_avg'] = entry['exp_avg'][:, :1]
  with pytest.raises(torch_checkpoint.ConversionError,
                     match=r'(?s)disc_optimizer_state_dict exp_avg: .*'
                     r'conv_layers\.3\.weight'):
    torch_checkpoint.convert(checkpoint, config, str(path))
  del checkpoint['optimizer_state_dict']['state'][0]['exp_avg_sq']
  with pytest.raises(torch_checkpoint.ConversionError,
                     match=r"state\[0\] \(creative_agent\.mask_generator\."
                     r"input_analyzer\.0\.weight\) has no 'exp_avg_sq'"):
    torch_checkpoint.convert(checkpoint, config, str(path))


def test_missing_and_unknown_keys_are_listed(config):
  checkpoint = reference.numpy_checkpoint(reference_model(config, 2, True))
  state_dict = checkpoint['model_state_dict']
  del state_dict['cascade_stages.1.output_proj.weight_u']
  del state_dict['cascade_stages.0.pos_encoding.pe']
  state_dict['cascade_stages.1.extra_norm.weight'] = np.ones(3, np.float32)
  with pytest.raises(torch_checkpoint.ConversionError) as error:
    torch_checkpoint.convert(checkpoint, config, 'old.pt')
  message = str(error.value)
  assert message.startswith('old.pt model_state_dict')
  for key in ('cascade_stages.1.output_proj.weight_u',
              'cascade_stages.0.pos_encoding.pe',
              'cascade_stages.1.extra_norm.weight'):
    assert key in message


def test_shapes_must_fit_the_config(config):
  checkpoint = reference.numpy_checkpoint(reference_model(config, 2, True))
  config = train_config.changed(config, {'model.mask_hidden': 32})
  with pytest.raises(torch_checkpoint.ConversionError,
                     match=r'mask_generator\.input_analyzer\.0\.weight: '
                     r'\(16, 16, 3\) in the checkpoint, \(32, 16, 3\)'):
    torch_checkpoint.convert(checkpoint, config)


def test_gan_weights_need_the_gan_on(config):
  model = reference_model(config, 2, False)
  checkpoint = reference.numpy_checkpoint(model, discriminator_state_dict={})
  config = train_config.changed(config, {'loss.gan_weight': 0.0})
  with pytest.raises(torch_checkpoint.ConversionError, match='loss.gan_weight'):
    torch_checkpoint.convert(checkpoint, config)


def test_positions_must_be_the_sinusoids(config):
  checkpoint = reference.numpy_checkpoint(reference_model(config, 2, False))
  checkpoint['model_state_dict']['cascade_stages.1.pos_encoding.pe'][
      0, 5, 0] += 0.1
  with pytest.raises(torch_checkpoint.ConversionError,
                     match=r'cascade_stages\.1\.pos_encoding\.pe differs'):
    torch_checkpoint.convert(checkpoint, config)


def test_pickled_objects_need_allow_pickle(tmp_path):
  path = tmp_path / 'with_args.pt'
  torch.save({'model_state_dict': {'w': torch.ones(2)},
              'args': argparse.Namespace(lr=1e-4)}, path)
  with pytest.raises(torch_checkpoint.ConversionError, match='--allow-pickle'):
    convert_torch.load_torch_checkpoint(path)
  loaded = convert_torch.load_torch_checkpoint(path, allow_pickle=True)
  np.testing.assert_array_equal(loaded['model_state_dict']['w'], [1.0, 1.0])

  torch.save(torch.ones(2), tmp_path / 'tensor.pt')
  with pytest.raises(torch_checkpoint.ConversionError, match='not a checkpoint'):
    convert_torch.load_torch_checkpoint(tmp_path / 'tensor.pt')


def test_command_writes_a_workdir_that_training_restores(tmp_path,
                                                         config):
  model = reference_model(config, 2, False)
  path = tmp_path / 'checkpoint_epoch_7.pt'
  reference.save_checkpoint(path, model, epoch=7, best_val_loss=0.25,
                            distributed=True)
  m = config.model
  sizes = [f'--config.model.{name}={getattr(m, name)}' for name in (
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

  trained = trained_model.TrainedModel.load(workdir, 'latest')
  # epoch 7 is 0-based: 8 epochs of 3 steps are done.
  assert trained.step == trained.updates == 8 * 3
  config = trained.config
  assert config.model.num_stages == 2
  assert not config.model.use_creative_agent
  _, expected = torch_checkpoint.convert(
      convert_torch.load_torch_checkpoint(path), config)
  jax.tree.map(np.testing.assert_array_equal, trained.variables,
               {'params': expected.params,
                'batch_stats': expected.batch_stats})
  _, state, _ = run_dir.load(workdir, 'latest')
  tx, _ = optimizers.make_optimizers(config.optim)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state,
               tx.init(state.params))  # a fresh torch AdamW's moments

  with pytest.raises(run_dir.CheckpointError,
                     match='holds checkpoints already'):
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
