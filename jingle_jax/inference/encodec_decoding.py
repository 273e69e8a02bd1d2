"""EnCodec's decoder in JAX with a latent dataset's weights: latents -> audio.

precompute (which has torch) converts the EnCodec model it encodes with into
DECODER_FILE beside the manifest: msgpack of {'encodec_weights': the
manifest's identity of the weights, 'params': EncodecDecoder's parameters},
and records the file name in the manifest's 'decoder' field. This side reads
it without torch and refuses a file whose identity is not the manifest's.

Songs are decoded as precompute.torch_decode decodes them: in consecutive 16 s
chunks (1,200 frames), each on its own. A last chunk of at least
PADDED_FRAMES frames is padded with zeros to 1,200 and its audio cut back
(the decoder is causal), so every chunk compiles to one shape.
"""

import functools
import os
from typing import Any

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.core import files
from jingle_jax.data import latents
from jingle_jax.models import encodec_decoder

DECODER_FILE = 'decoder.msgpack'
CHUNK_FRAMES = 16 * latents.FRAME_RATE
# The first convolution (kernel 7) reflects 6 frames: a chunk shorter than 7
# frames reflects its own end, so zeros after it would change its audio.
PADDED_FRAMES = 7


class DecoderError(ValueError):
  """No usable decoder weights; the message names the file at fault."""


def write_msgpack(path, tree) -> None:
  """A tree of identities and arrays (weights files) as msgpack,
  atomically."""
  with files.atomic_write(path) as f:
    f.write(flax.serialization.msgpack_serialize(
        jax.tree.map(lambda x: x if isinstance(x, str) else np.asarray(x),
                     tree)))


def read_msgpack(path, error, what: str):
  """The tree write_msgpack wrote at `path`; else error(message) naming the
  file: `what` is missing or cannot be read."""
  try:
    with open(path, 'rb') as f:
      return flax.serialization.msgpack_restore(f.read())
  except FileNotFoundError:
    raise error(f'{path}: {what} are missing') from None
  except Exception as e:  # pylint: disable=broad-except
    raise error(f'{path}: unreadable {what}: {e}') from None


def fits(module, example_input, params) -> bool:
  """Whether `params` have the shapes of `module`'s parameters."""
  expected = jax.eval_shape(module.init, jax.random.key(0),
                            example_input)['params']
  return (jax.tree.map(np.shape, params) ==
          jax.tree.map(lambda x: x.shape, expected))


def fits_decoder(params) -> bool:
  """Whether `params` fit EnCodec's 24 kHz decoder."""
  return fits(encodec_decoder.EncodecDecoder(),
              jnp.zeros((1, PADDED_FRAMES, latents.LATENT_DIM)), params)


def write(out_dir, params, encodec_weights: str) -> str:
  """Writes out_dir/DECODER_FILE atomically; returns its path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(os.fspath(out_dir), DECODER_FILE)
  write_msgpack(path, {'encodec_weights': encodec_weights, 'params': params})
  return path


def read(dataset: latents.LatentDataset) -> dict:
  """The decoder parameters a dataset records, its weights' identity
  checked against the manifest's."""
  name = dataset.manifest.decoder
  if name is None:
    raise DecoderError(
        f'{dataset.manifest_path} records no decoder: run python -m '
        'precompute.export_decoder --manifest on it (or precompute.encode '
        'again) to write one')
  path = os.path.join(os.path.dirname(dataset.manifest_path), name)
  tree = read_msgpack(path, DecoderError, 'decoder weights')
  recorded = dataset.manifest.encodec_weights
  if not isinstance(tree, dict) or 'params' not in tree:
    raise DecoderError(f'{path}: not a decoder weights file')
  if tree.get('encodec_weights') != recorded:
    raise DecoderError(
        f'{path} holds the decoder of EnCodec weights '
        f'{tree.get("encodec_weights")}, but {dataset.manifest_path} was '
        f'encoded with {recorded}: refusing to decode with other weights '
        'than the encoder\'s')
  if not fits_decoder(tree['params']):
    raise DecoderError(f'{path}: parameters do not fit EnCodec\'s 24 kHz '
                       'decoder')
  return tree['params']


class DecoderBundle(flax.struct.PyTreeNode):
  """EnCodec's frozen decoder as the train and eval steps take it."""
  params: Any  # EncodecDecoder's parameters
  mean: jax.Array  # [D]: latents x std + mean are the raw ones it decodes
  std: jax.Array


def step_decoder(loss_weights, dataset, space):
  """The train step's DecoderBundle when config.loss weights audio terms
  (the model's latents turned raw with the latent_space.LatentSpace
  `space`); else None."""
  if not loss_weights.uses_audio:
    return None
  try:
    params = read(dataset)
  except DecoderError as e:
    raise DecoderError(f'config.loss weights audio-domain terms, which need '
                       f'the dataset\'s decoder weights: {e}') from None
  return DecoderBundle(params, space.mean, space.std)


@functools.cache
def compiled_decoder():
  """jit(variables, latents [B, T, 128]) -> audio [B, T x 320] (float32)."""
  return jax.jit(encodec_decoder.EncodecDecoder().apply)


def chunks(lengths, chunk: int = CHUNK_FRAMES):
  """(item, start) of the consecutive chunks of items of these lengths."""
  return [(item, start) for item, length in enumerate(lengths)
          for start in range(0, length, chunk)]


def decode_clips(params, clips, batch_size: int = 4) -> list[np.ndarray]:
  """Latents [frames, 128] each -> mono 24 kHz float32 audio of
  frames x 320 samples each, 16 s chunks batch_size at a time."""
  apply = compiled_decoder()
  pieces = chunks([len(clip) for clip in clips])
  lengths = [min(CHUNK_FRAMES, len(clips[item]) - start)
             for item, start in pieces]
  # Chunks of one padded length go together, in order.
  groups = {}
  for index, length in enumerate(lengths):
    padded = CHUNK_FRAMES if length >= PADDED_FRAMES else length
    groups.setdefault(padded, []).append(index)
  outputs = [None] * len(pieces)
  for padded, indices in groups.items():
    # One batch shape per group: its last batch is filled up with zeros.
    size = min(batch_size, len(indices))
    for start in range(0, len(indices), size):
      batch = indices[start:start + size]
      frames = np.zeros((size, padded, latents.LATENT_DIM), np.float32)
      for row, index in enumerate(batch):
        item, offset = pieces[index]
        frames[row, :lengths[index]] = clips[item][offset:offset + padded]
      audio = np.asarray(apply({'params': params}, frames))
      for row, index in enumerate(batch):
        outputs[index] = audio[row, :lengths[index] * encodec_decoder.HOP]
  audio = [[] for _ in clips]
  for (item, _), output in zip(pieces, outputs):
    audio[item].append(output)
  return [np.concatenate(parts) for parts in audio]
