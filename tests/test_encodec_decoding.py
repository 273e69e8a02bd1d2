"""The JAX EnCodec decoder against EnCodec's own PyTorch decoder, and its
weights file."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jingle_jax.config import run_config
from jingle_jax.data import latent_space
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.models import encodec_decoder
from jingle_jax.models import seanet
from precompute import codec
from precompute import encodec_weights
from precompute import jax_weights
import latent_data


@pytest.fixture(scope='module')
def encodec():
  """Seeded random EnCodec weights and their JAX decoder parameters."""
  model = encodec_weights.random_model(0)
  return model, jax_weights.decoder_params(model)


def random_latents(seed, *shape):
  # Latents of the scale EnCodec's encoder gives real music (std ~ 3-5).
  return (4 * np.random.default_rng(seed).normal(size=shape)).astype(
      np.float32)


def torch_decode(model, latent_batch):
  with torch.inference_mode():
    return model.decoder(torch.from_numpy(latent_batch).transpose(1, 2)
                         )[:, 0].numpy()


def assert_close(actual, expected, tolerance):
  error = np.max(np.abs(actual - expected))
  assert error <= tolerance * max(1.0, np.max(np.abs(expected))), error


def test_songs_decode_as_pytorch_decodes_them(encodec):
  model, params = encodec
  # 16 s and 37 frames more (padded to 16 s), and a 5-frame song (as is).
  songs = [random_latents(1, 1237, 128), random_latents(2, 5, 128)]
  expected = codec.decode(model, songs, device='cpu', batch_size=4)
  actual = encodec_decoding.decode_clips(params, songs, batch_size=4)
  for song, got, want in zip(songs, actual, expected):
    assert got.shape == want.shape == (len(song) * 320,)
    assert_close(got, want, 1e-4)
  assert np.std(expected[0]) > 1e-3  # the comparison is not of near-zeros


def test_each_block_matches_pytorch(encodec):
  model, params = encodec
  layers = list(model.decoder.model)
  x = random_latents(3, 1, 20, 128)
  torch_x = torch.from_numpy(x).transpose(1, 2)

  def check(module, module_params, torch_layers, x, torch_x):
    with torch.inference_mode():
      for layer in torch_layers:
        torch_x = layer(torch_x)
    x = module.apply({'params': module_params}, x)
    assert_close(np.asarray(x), torch_x.transpose(1, 2).numpy(), 1e-5)
    return x, torch_x

  x, torch_x = check(seanet.CausalConv(512, 7), params['conv_in'],
                     layers[:1], x, torch_x)
  lstm_params = {'lstm_0': params['lstm_0'], 'lstm_1': params['lstm_1']}

  class Recurrent(encodec_decoder.nn.Module):

    @encodec_decoder.nn.compact
    def __call__(self, x):
      y = seanet.LSTM(512, name='lstm_0')(x)
      return x + seanet.LSTM(512, name='lstm_1')(y)

  x, torch_x = check(Recurrent(), lstm_params, layers[1:2], x, torch_x)
  features = 512
  for index, stride in enumerate(encodec_decoder.STRIDES):
    features //= 2
    x, torch_x = check(encodec_decoder.UpsampleStage(features, stride),
                       params[f'stage_{index}'],
                       layers[2 + 3 * index:5 + 3 * index], x, torch_x)
  last = encodec_decoder.nn.Sequential(
      [encodec_decoder.nn.elu, seanet.CausalConv(1, 7)])
  check(last, {'layers_1': params['conv_out']}, layers[-2:], x, torch_x)


def test_gradients_match_pytorch_autograd(encodec):
  model, params = encodec
  x = random_latents(4, 2, 12, 128)
  cotangent = np.random.default_rng(5).normal(size=(2, 12 * 320)).astype(
      np.float32)
  torch_x = torch.from_numpy(x).requires_grad_()
  torch_y = model.decoder(torch_x.transpose(1, 2))[:, 0]
  torch_y.backward(torch.from_numpy(cotangent))
  expected = torch_x.grad.numpy()

  for remat in (False, True):
    decoder = encodec_decoder.EncodecDecoder(remat=remat)
    _, vjp = jax.vjp(lambda z: decoder.apply({'params': params}, z), x)
    gradient, = vjp(cotangent)
    relative = np.max(np.abs(gradient - expected)) / np.max(np.abs(expected))
    assert relative <= 1e-3, (remat, relative)


def autodiff_recurrence(projected, kernel):
  """torch.nn.LSTM's recurrence from zero states, differentiated by JAX."""
  def step(carry, projected_t):
    hidden, cell = carry
    z = (projected_t + hidden @ kernel).astype(jnp.float32)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    hidden = (jax.nn.sigmoid(o) * jnp.tanh(cell)).astype(projected.dtype)
    return (hidden, cell), hidden

  batch, width = projected.shape[1], kernel.shape[0]
  return jax.lax.scan(step, (jnp.zeros((batch, width), projected.dtype),
                             jnp.zeros((batch, width))), projected)[1]


@pytest.mark.parametrize('dtype, tolerance',
                         [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_the_lstm_backward_pass_is_autodiffs(dtype, tolerance):
  """seanet.recurrence's written-out backward pass: the gradients of the
  projected inputs and of the recurrent kernel are autodiff's."""
  rng = np.random.default_rng(3)
  steps, batch, width = 40, 3, 8
  projected = jnp.asarray(rng.normal(size=(steps, batch, 4 * width)), dtype)
  kernel = jnp.asarray(rng.normal(size=(width, 4 * width)) / 3, dtype)
  weights = rng.normal(size=(steps, batch, width)).astype(np.float32)
  gradients = lambda f: jax.grad(lambda p, k: jnp.sum(
      f(p, k).astype(jnp.float32) * weights), (0, 1))(projected, kernel)
  np.testing.assert_array_equal(seanet.recurrence(projected, kernel),
                                autodiff_recurrence(projected, kernel))
  for actual, expected in zip(gradients(seanet.recurrence),
                              gradients(autodiff_recurrence)):
    assert actual.dtype == expected.dtype == dtype
    actual, expected = (np.asarray(x, np.float32) for x in (actual, expected))
    relative = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert relative < tolerance, relative


def test_the_lstm_keeps_its_pre_activations_and_states_per_step():
  """Per time step, the backward pass keeps the gates' pre-activations,
  the hidden state and the cell (each an array the loop writes every step),
  not each gate and intermediate."""
  steps, batch, width = 50, 2, 8
  lstm = seanet.LSTM(width)
  x = jnp.zeros((batch, steps, width))
  params = lstm.init(jax.random.key(0), x)
  residuals = jax.eval_shape(lambda p: jax.vjp(
      lambda p: lstm.apply(p, x), p)[1], params)
  per_step = sorted(leaf.shape[2:] for leaf in jax.tree.leaves(residuals)
                    if leaf.shape[:2] == (steps, batch))
  assert per_step == [(width,), (width,), (4 * width,)]


def test_bfloat16_compute_stays_near_float32(encodec):
  _, params = encodec
  x = random_latents(6, 1, 30, 128)
  exact = encodec_decoder.EncodecDecoder().apply({'params': params}, x)
  rounded = encodec_decoder.EncodecDecoder(jnp.bfloat16).apply(
      {'params': params}, x)
  assert rounded.dtype == jnp.float32
  relative = np.linalg.norm(rounded - exact) / np.linalg.norm(exact)
  assert relative < 0.05, relative


def dataset_with_decoder(path, weights, model, identity=None):
  name = jax_weights.export(path, model, identity or weights)
  latent_data.write_dataset(path, {'a': ('train', np.zeros((20, 128)))},
                            weights=weights, decoder=name)
  return latents.LatentDataset(path)


def test_weights_file_round_trip_and_refusals(tmp_path, encodec):
  model, params = encodec
  dataset = dataset_with_decoder(tmp_path / 'good', 'random:0', model)
  read = encodec_decoding.read(dataset)
  jax.tree.map(np.testing.assert_array_equal, read, params)

  other = dataset_with_decoder(tmp_path / 'other', 'random:0', model,
                               identity='random:1')
  with pytest.raises(encodec_decoding.DecoderError,
                     match='random:1.*random:0: refusing'):
    encodec_decoding.read(other)

  path = tmp_path / 'good' / encodec_decoding.DECODER_FILE
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(encodec_decoding.DecoderError,
                     match=f'{path}: unreadable decoder weights'):
    encodec_decoding.read(dataset)
  path.unlink()
  with pytest.raises(encodec_decoding.DecoderError, match=f'{path}: .*missing'):
    encodec_decoding.read(dataset)

  bare = tmp_path / 'bare'
  latent_data.write_dataset(bare, {'a': ('train', np.zeros((20, 128)))},
                            weights='random:0')
  with pytest.raises(encodec_decoding.DecoderError,
                     match='records no decoder: run python -m '
                     'precompute.export_decoder'):
    encodec_decoding.read(latents.LatentDataset(bare))

  # Training: only audio-domain weights need the decoder.
  weights = run_config.LossConfig(spectral_outlier_weight=0.0)
  space = latent_space.LatentSpace.of(True, dataset)
  bare_dataset = latents.LatentDataset(bare)
  assert encodec_decoding.step_decoder(weights, bare_dataset,
                                       space) is None
  weights = dataclasses.replace(weights, mel_weight=1.0)
  with pytest.raises(encodec_decoding.DecoderError,
                     match='config.loss weights audio-domain terms.*'
                     'records no decoder'):
    encodec_decoding.step_decoder(weights, bare_dataset, space)
