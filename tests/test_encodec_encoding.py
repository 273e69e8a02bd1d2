"""The JAX EnCodec encoder against EnCodec's own PyTorch encoder, and the
converted weights file."""

import os

import flax.serialization
import jax
import numpy as np
import pytest
import torch

from jingle_jax.data import latents
from jingle_jax.inference import encodec_encoding
from jingle_jax.models import encodec_encoder
from precompute import codec
from precompute import encodec_weights
from precompute import jax_weights

# A local EnCodec 24 kHz state dict to check as well (encodec_24khz-*.th).
CHECKPOINT = os.environ.get('JINGLE_ENCODEC_CHECKPOINT')


@pytest.fixture(scope='module', params=['random'] + (
    ['checkpoint'] if CHECKPOINT else []))
def encodec(request):
  """EnCodec's model and the JAX encoder's parameters converted from it."""
  if request.param == 'random':
    model = encodec_weights.random_model(0)
  else:
    model, _ = encodec_weights.load(CHECKPOINT, None)
  return model, jax_weights.encoder_params(model)


def music_like(seed, samples):
  """Noise shaped like music's level, so the latents are not near zero."""
  return (0.2 * np.random.default_rng(seed).normal(size=samples)).astype(
      np.float32)


def relative_error(actual, expected):
  return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize('seconds', [1, 5, 16, 2.0007])  # the last: odd
def test_encoder_matches_pytorch_at_any_length(encodec, seconds):
  model, params = encodec
  audio = music_like(1, round(seconds * latents.SAMPLE_RATE))[None]
  with torch.inference_mode():
    expected = model.encoder(torch.from_numpy(audio)[:, None])[0].T.numpy()
  actual = encodec_encoder.EncodecEncoder().apply({'params': params}, audio)
  assert actual.shape == (1, -(-audio.shape[1] // latents.HOP), 128)
  assert actual.shape[1:] == expected.shape
  assert relative_error(np.asarray(actual[0]), expected) <= 1e-4
  assert np.std(expected) > 1e-3  # the comparison is not of near-zeros


def test_a_long_song_streams_as_pytorch_streams_it(encodec):
  """60 s and an odd 7 samples, in blocks of uneven sizes, two 16 s chunks
  per call: the frames of PyTorch's path, within 1e-4."""
  model, params = encodec
  song = music_like(2, 60 * latents.SAMPLE_RATE + 7)
  blocks = np.split(song, [1000, 300_000, 1_000_001])
  expected = list(codec.encode(model, blocks, device='cpu', batch_size=2))
  actual = list(encodec_encoding.JaxEncoder(params, batch_size=2).encode(
      blocks))
  assert [a.shape for a in actual] == [e.shape for e in expected] == [
      (2400, 128), (2100, 128)]
  assert relative_error(np.concatenate(actual),
                        np.concatenate(expected)) <= 1e-4


def test_chunks_fill_up_to_a_multiple_of_the_batch_rows():
  batch = encodec_encoding.chunk_batch(np.arange(7, dtype=np.float32), 3, 4)
  np.testing.assert_array_equal(batch, [[0, 1, 2], [3, 4, 5], [6, 0, 0],
                                        [0, 0, 0]])


def test_weights_file_round_trip_and_refusals(tmp_path, encodec):
  model, params = encodec
  path = tmp_path / encodec_encoding.WEIGHTS_FILE
  jax_weights.write_converted(path, model, 'random:0')
  read = encodec_encoding.read_weights(path)
  assert read['encodec_weights'] == 'random:0'
  jax.tree.map(np.testing.assert_array_equal, read['encoder'], params)
  jax.tree.map(np.testing.assert_array_equal, read['decoder'],
               jax_weights.decoder_params(model))

  truncated = tmp_path / 'truncated.msgpack'
  truncated.write_bytes(path.read_bytes()[:1000])
  other = tmp_path / 'other.msgpack'
  other.write_bytes(flax.serialization.msgpack_serialize(
      {'encodec_weights': 'random:0', 'params': {}}))
  wrong_encoder = tmp_path / 'wrong_encoder.msgpack'
  kernel = read['encoder']['conv_in']['kernel']
  read['encoder']['conv_in']['kernel'] = np.zeros((7, 1, 8), np.float32)
  wrong_encoder.write_bytes(flax.serialization.msgpack_serialize(read))
  read['encoder']['conv_in']['kernel'] = kernel
  wrong_decoder = tmp_path / 'wrong_decoder.msgpack'
  read['decoder']['conv_out']['bias'] = np.zeros(2, np.float32)
  wrong_decoder.write_bytes(flax.serialization.msgpack_serialize(read))
  for bad, says in ((tmp_path / 'absent',
                     'converted EnCodec weights are missing'),
                    (truncated, 'unreadable converted EnCodec weights'),
                    (other, 'expected encodec_weights, encoder and decoder'),
                    (wrong_encoder, 'its encoder is not EnCodec 24 kHz\'s'),
                    (wrong_decoder, 'its decoder is not EnCodec 24 kHz\'s')):
    with pytest.raises(encodec_encoding.EncoderError,
                       match=f'{bad}: .*{says}'):
      encodec_encoding.read_weights(bad)
