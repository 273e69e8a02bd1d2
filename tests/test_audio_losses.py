"""The audio-domain terms against PyTorch computations of the same
definitions (DESIGN.md 4.5a), on the same audio, and in the train step."""

import functools

import jax
import numpy as np
import pytest
import torch

from jingle_jax.config import run_config
from jingle_jax.data import latent_space
from jingle_jax.inference import encodec_decoding
from jingle_jax.models import encodec_decoder
from jingle_jax.training import audio_losses
from jingle_jax.training import train_step
import torch_audio_reference as reference
import train_config

SAMPLES = 3 * 24_000 + 17  # not a multiple of any hop or of 250


@pytest.fixture(scope='module')
def audio():
  """(output, input, target) [2, SAMPLES]: noise with a swelling sine, so
  that envelopes, bands and spectra are not flat."""
  rng = np.random.default_rng(0)
  time = np.arange(SAMPLES) / 24_000
  swell = np.sin(2 * np.pi * 0.7 * time) ** 2
  clips = []
  for seed in range(3):
    tone = np.sin(2 * np.pi * (440 + 1500 * seed) * time) * swell
    clips.append((0.3 * tone + 0.05 * rng.normal(size=(2, SAMPLES))
                  ).astype(np.float32))
  return clips


def check(jax_value, torch_value):
  jax_value, torch_value = float(jax_value), float(torch_value)
  assert abs(jax_value - torch_value) <= 1e-4 * abs(torch_value), (
      jax_value, torch_value)


def test_stft_and_mel_distances_match_torch(audio):
  output, inputs, _ = audio
  for name in ('stft_distance', 'mel_distance'):
    check(getattr(audio_losses, name)(output, inputs),
          getattr(reference, name)(torch.from_numpy(output),
                                   torch.from_numpy(inputs)))


def test_mel_spectrogram_is_torchaudios(audio):
  import torchaudio  # pylint: disable=g-import-not-at-top
  mel = torchaudio.transforms.MelSpectrogram(
      sample_rate=24000, n_fft=1024, hop_length=256, n_mels=80, f_max=8000.0)
  expected = mel(torch.from_numpy(audio[0])).numpy().transpose(0, 2, 1)
  actual = np.asarray(audio_losses.mel_spectrogram(audio[0]))
  np.testing.assert_allclose(actual, expected, rtol=1e-4,
                             atol=1e-4 * expected.max())


def test_correlation_and_outlier_match_torch(audio):
  output, inputs, targets = audio
  check(audio_losses.correlation_cost(output, inputs, targets),
        reference.correlation_cost(*map(torch.from_numpy, audio)))
  check(audio_losses.spectral_outlier(output),
        reference.spectral_outlier(torch.from_numpy(output)))
  assert float(audio_losses.spectral_outlier(output)) > 0


def test_weighted_terms_match_the_torch_step(audio):
  terms = run_config.LossConfig().audio_weights
  weights = run_config.LossConfig(**{
      f'{name}_weight': 0.5 + index for index, name in enumerate(terms)})
  assert list(weights.audio_weights.values()) == [0.5 + index for index in
                                                  range(len(terms))]
  total, terms = audio_losses.weighted_terms(*audio, weights)
  assert sorted(terms) == sorted(weights.audio_weights)
  check(total, reference.weighted_terms(  # on audio: decoding is identity
      lambda clips: clips, *map(torch.from_numpy, audio), weights))


@pytest.mark.parametrize('name, tolerance', [
    # |log M_o - log M_r| is not smooth where the two are equal; float32
    # rounding flips some of those bins' signs (in float64 the STFT
    # gradients agree to 5e-4).
    ('stft_distance', 1e-2), ('mel_distance', 1e-2),
    ('correlation_cost', 1e-4), ('spectral_outlier', 1e-4)])
def test_gradients_match_torch(audio, name, tolerance):
  output, inputs, targets = audio
  others = {'stft_distance': (inputs,), 'mel_distance': (targets,),
            'correlation_cost': (inputs, targets), 'spectral_outlier': ()}[
                name]
  torch_out = torch.from_numpy(output).requires_grad_()
  getattr(reference, name)(torch_out,
                           *map(torch.from_numpy, others)).backward()
  expected = torch_out.grad.numpy()
  actual = np.asarray(jax.grad(
      lambda out: getattr(audio_losses, name)(out, *others))(output))
  error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
  assert error <= tolerance, error


def test_silence_has_finite_gradients():
  silent = np.zeros((1, 4096), np.float32)
  gradient = jax.grad(lambda x: audio_losses.stft_distance(x, silent + 0.1)
                      + audio_losses.spectral_outlier(x))(silent)
  assert np.all(np.isfinite(np.asarray(gradient)))


@pytest.fixture(scope='module')
def step_setup(tiny_config):
  """(config with GAN and two audio terms, the same without, state, batch,
  decoder): the tiny 16-channel model, whose latents the decoder (weights
  of Flax's initialisation for 16 channels) maps to raw by mean/std."""
  config = train_config.changed(tiny_config, {
      'loss.stft_weight': 0.5, 'loss.spectral_outlier_weight': 0.01})
  state = jax.jit(functools.partial(train_step.create_train_state, config))(
      jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {name: rng.normal(size=(2, 8, 16)).astype(np.float32)
           for name in ('input', 'target')}
  decoder = encodec_decoding.DecoderBundle(
      encodec_decoder.EncodecDecoder().init(
          jax.random.key(1), np.zeros((1, 7, 16)))['params'],
      rng.normal(size=16).astype(np.float32), np.full(16, 2.0, np.float32))
  return config, tiny_config, state, batch, decoder


def test_the_step_adds_the_weighted_audio_terms(step_setup):
  config, _, state, batch, decoder = step_setup
  space = latent_space.identity(16)
  metrics = jax.jit(functools.partial(train_step.train_step, config=config))(
      state, batch, jax.random.key(2), space, decoder)[1]
  expected = (0.1 * metrics['mask_reg'] + metrics['balance_weighted']
              + 0.1 * metrics['g_adv'] + 0.5 * metrics['stft']
              + 0.01 * metrics['spectral_outlier'])
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
  assert float(metrics['stft']) > 0 and float(metrics['skipped']) == 0
  # Validation: the reconstruction terms only; the outlier penalty reported.
  evaluated = jax.jit(functools.partial(train_step.eval_step, config=config))(
      state, batch, space, decoder)
  np.testing.assert_allclose(
      evaluated['loss'], 0.1 * evaluated['mask_reg'] + 0.5 * evaluated['stft'],
      rtol=1e-5)
  assert float(evaluated['spectral_outlier']) > 0


def test_the_decoder_is_compiled_only_with_audio_weights(step_setup):
  config, plain, state, batch, decoder = step_setup

  def flops(config, decoder):
    lowered = jax.jit(functools.partial(train_step.train_step, config=config)
                      ).lower(state, batch, jax.random.key(2),
                              latent_space.identity(16), decoder)
    return lowered.cost_analysis()['flops']

  assert flops(plain, decoder) == flops(plain, None)
  # The decoder's forward of output, input and target, and its backward.
  assert flops(config, decoder) > 2 * flops(plain, None)


def test_the_target_waveform_replaces_the_decoded_target(step_setup):
  config, _, _, batch, decoder = step_setup
  loss = jax.jit(functools.partial(train_step.audio_loss, config=config))
  output = np.random.default_rng(3).normal(size=(2, 8, 16)).astype(
      np.float32)
  decode = functools.partial(jax.jit(functools.partial(
      train_step.decode_latents, model_config=config.model)), decoder)
  decoded = {name: np.asarray(decode(batch[name])) for name in batch}
  # The decoded target given as the waveform: the same terms.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5),
               loss(output, dict(batch, target_audio=decoded['target']),
                    decoder), loss(output, batch, decoder))
  waveform = np.random.default_rng(4).uniform(
      -0.5, 0.5, (2, 8 * 320)).astype(np.float16)
  with_waveform = dict(batch, target_audio=waveform)
  total, metrics = loss(output, with_waveform, decoder)
  output_audio = decode(output)
  expected = 0.5 * (
      audio_losses.stft_distance(output_audio, decoded['input'])
      + audio_losses.stft_distance(output_audio, waveform.astype(np.float32)))
  np.testing.assert_allclose(metrics['stft'], expected, rtol=1e-5)
  np.testing.assert_allclose(
      total, 0.5 * expected + 0.01 * metrics['spectral_outlier'], rtol=1e-5)
  # The target is no longer decoded.
  flops = lambda batch: loss.lower(output, batch, decoder).cost_analysis()[
      'flops']
  assert flops(with_waveform) < 0.8 * flops(batch)
