"""Songs into EnCodec latents, 16 s at a time, by either encoder; and the
converted weights that let the JAX encoder run without torch.

A song is cut into consecutive chunks of 16 s (1,200 frames) from its
start, each encoded on its own, as the original encoded each of its 16 s
clips. Encoding streams: a song's audio arrives in blocks, and its latents
leave a batch of chunks at a time, with one batch in flight so that the
accelerator encodes while the host reads and resamples the next blocks.

WEIGHTS_FILE is msgpack of {'encodec_weights': the weights' identity (as a
manifest records it), 'encoder': EncodecEncoder's parameters, 'decoder':
EncodecDecoder's}, written by precompute (which has torch) and read here
without it.
"""

import functools

import jax
import numpy as np

from jingle_jax.core import errors
from jingle_jax.core import parallel
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.models import encodec_encoder

WEIGHTS_FILE = 'encodec_jax.msgpack'
CHUNK_SAMPLES = encodec_decoding.CHUNK_FRAMES * latents.HOP
# The encoder's last convolution (kernel 7) pads 6 frames by reflection: a
# chunk shorter than 7 frames reflects its own end, so zeros after it would
# change its first frames; from 7 frames on they change nothing.
PADDED_FRAMES = 7


class EncoderError(errors.UserError, ValueError):
  """No usable converted weights; the message names the file at fault."""


def write_weights(path, encodec_weights: str, encoder, decoder) -> None:
  """Writes the converted weights file at `path`, atomically."""
  encodec_decoding.write_msgpack(path, {'encodec_weights': encodec_weights,
                                        'encoder': encoder,
                                        'decoder': decoder})


def read_weights(path) -> dict:
  """{'encodec_weights', 'encoder', 'decoder'} of a converted weights file,
  both models' parameter shapes checked."""
  tree = encodec_decoding.read_msgpack(path, EncoderError,
                                       'converted EnCodec weights')
  if not isinstance(tree, dict) or set(tree) != {'encodec_weights', 'encoder',
                                                 'decoder'}:
    raise EncoderError(f'{path}: not a converted EnCodec weights file '
                       '(expected encodec_weights, encoder and decoder)')
  if not encodec_decoding.fits(encodec_encoder.EncodecEncoder(),
                               np.zeros((1, latents.HOP), np.float32),
                               tree['encoder']):
    raise EncoderError(f'{path}: its encoder is not EnCodec 24 kHz\'s')
  if not encodec_decoding.fits_decoder(tree['decoder']):
    raise EncoderError(f'{path}: its decoder is not EnCodec 24 kHz\'s')
  tree['encodec_weights'] = str(tree['encodec_weights'])
  return tree


def stream(encode_chunks, blocks, *, batch_size: int):
  """Latents [frames, 128] float32 of one song's mono 24 kHz float32 audio.

  `blocks` (any sizes) are the song in order; the latents are yielded in
  order, batch_size chunks at a time. n samples give n // 320 frames (75 per
  second): the samples after the last whole frame are dropped.

  encode_chunks(samples, chunk) encodes `samples` cut into chunks of `chunk`
  samples, the last zero-padded, into the samples' frames, an array of
  [ceil(len(samples) / 320), 128] (which may still be computing). It takes batch_size chunks of 16 s at a time: the
  encoder is causal, so a padded last chunk's frames come out the same.
  Only a last chunk of under PADDED_FRAMES frames is encoded as it is.
  """
  chunk = CHUNK_SAMPLES
  pending = np.zeros(0, np.float32)
  in_flight = None
  for block in blocks:
    pending = np.concatenate([pending, block])
    while len(pending) >= batch_size * chunk:
      encoded = encode_chunks(pending[:batch_size * chunk], chunk)
      if in_flight is not None:
        yield np.asarray(in_flight)
      in_flight = encoded
      pending = pending[batch_size * chunk:]
  if in_flight is not None:
    yield np.asarray(in_flight)
  frames = len(pending) // latents.HOP
  if frames:
    samples = frames * latents.HOP
    yield np.asarray(encode_chunks(
        pending[:samples], chunk if frames >= PADDED_FRAMES else samples))


def frames_of(samples) -> int:
  """The encoder's frames of `samples`: one per 320, the last part one."""
  return -(-len(samples) // latents.HOP)


def chunk_batch(samples, chunk: int, multiple: int = 1) -> np.ndarray:
  """`samples` as [chunks, chunk], the last zero-padded, and zero chunks
  added up to a multiple of `multiple`."""
  count = -(-len(samples) // chunk)
  batch = np.zeros((-(-count // multiple) * multiple, chunk), np.float32)
  batch.reshape(-1)[:len(samples)] = samples
  return batch


@functools.cache
def compiled_encoder():
  """jit(variables, audio [B, N]) -> latents [B, ceil(N / 320), 128]."""
  return jax.jit(encodec_encoder.EncodecEncoder().apply)


class JaxEncoder:
  """EncodecEncoder over this host's devices, batch_size chunks a call:
  they are sharded over the devices, every call filled up with zero chunks
  to one count (a multiple of the devices), so that a song's last call
  compiles nothing new."""

  def __init__(self, params, batch_size: int = 1):
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()),
                             (parallel.DATA_AXIS,))
    self._split = parallel.data_sharding(mesh)
    self._rows = -(-batch_size // mesh.size) * mesh.size
    self.batch_size = batch_size
    self._params = jax.device_put(params, parallel.replicated(mesh))

  def __call__(self, samples, chunk: int):
    """encode_chunks of `stream`: [frames, 128], still computing."""
    batch = chunk_batch(samples, chunk, self._rows)
    encoded = compiled_encoder()({'params': self._params},
                                 jax.device_put(batch, self._split))
    return encoded.reshape(-1, encoded.shape[-1])[:frames_of(samples)]

  def encode(self, blocks):
    """`stream` of one song's audio blocks."""
    return stream(self, blocks, batch_size=self.batch_size)
