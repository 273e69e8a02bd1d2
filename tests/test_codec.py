"""Songs through EnCodec in chunks: frame counts, chunk independence,
batching, streaming."""

import numpy as np
import pytest
import torch

from jingle_jax.data import latents
from jingle_jax.inference import encodec_encoding
from precompute import codec
from precompute import encodec_weights

CHUNK = 8  # frames per chunk in these tests, instead of 16 s


@pytest.fixture(scope='module')
def model():
  return encodec_weights.random_model(0).eval()


@pytest.fixture
def short_chunks(monkeypatch):
  monkeypatch.setattr(codec, 'CHUNK_FRAMES', CHUNK)
  monkeypatch.setattr(encodec_encoding, 'CHUNK_SAMPLES', CHUNK * latents.HOP)


def test_encode_streams_a_song_as_independent_chunks(model, short_chunks):
  del short_chunks
  song = np.random.default_rng(0).uniform(
      -0.5, 0.5, 2 * CHUNK * latents.HOP + 5 * latents.HOP + 100).astype(
          np.float32)
  # Blocks of any sizes in, a batch of 2 chunks at a time out.
  blocks = np.split(song, [1000, 1001, 3 * CHUNK * latents.HOP // 2])
  encoded = list(codec.encode(model, blocks, device='cpu', batch_size=2))
  assert [e.shape for e in encoded] == [(2 * CHUNK, 128), (5, 128)]
  values = np.concatenate(encoded)
  with torch.inference_mode():
    for start, frames in ((0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, 5)):
      chunk = song[start * latents.HOP:(start + frames) * latents.HOP]
      alone = model.encoder(torch.from_numpy(chunk)[None, None])[0].T
      np.testing.assert_allclose(values[start:start + frames], alone,
                                 atol=1e-5)
  one_by_one = codec.encode(model, [song], device='cpu', batch_size=1)
  np.testing.assert_allclose(np.concatenate(list(one_by_one)), values,
                             atol=1e-5)
  whole_chunk = codec.encode(model, [song[:CHUNK * latents.HOP]], device='cpu',
                             batch_size=4)
  assert [e.shape for e in whole_chunk] == [(CHUNK, 128)]
  assert not list(codec.encode(model, [song[:latents.HOP - 1]], device='cpu',
                               batch_size=4))
  # A last chunk too short to be padded is encoded as it is.
  for frames in (encodec_encoding.PADDED_FRAMES - 1, encodec_encoding.PADDED_FRAMES):
    tail = song[:frames * latents.HOP]
    with torch.inference_mode():
      alone = model.encoder(torch.from_numpy(tail)[None, None])[0].T
    np.testing.assert_allclose(
        np.concatenate(list(codec.encode(model, [tail], device='cpu',
                                         batch_size=2))), alone, atol=1e-5)


def test_decode_gives_320_samples_per_frame(model, short_chunks):
  del short_chunks
  rng = np.random.default_rng(1)
  clips = [rng.normal(size=(frames, 128)).astype(np.float16)
           for frames in (2 * CHUNK + 3, 1)]
  audio = codec.decode(model, clips, device='cpu', batch_size=4)
  assert [a.shape for a in audio] == [((2 * CHUNK + 3) * 320,), (320,)]
  assert all(a.dtype == np.float32 and np.all(np.isfinite(a)) for a in audio)
  with torch.inference_mode():
    tail = torch.from_numpy(clips[0][2 * CHUNK:].astype(np.float32).T)
    alone = model.decoder(tail[None])[0, 0]
  np.testing.assert_allclose(audio[0][2 * CHUNK * 320:], alone, atol=1e-5)
