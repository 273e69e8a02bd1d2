"""One pair's results as files: raw latents (.npy), its mask picture and
its audio (the sample, evaluate and arrange commands share them)."""

import os

import numpy as np

from jingle_jax.core import files
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import wav_files


def window_record(pairs, pair: int, offset: int) -> dict:
  song, start = pairs.index[pair]
  return {'song': pairs.songs[song].id, 'first_frame': int(start + offset),
          'frames': pairs.window}


def save_npy(path, array) -> None:
  with files.atomic_write(path) as f:
    np.save(f, np.asarray(array, np.float32))


def save_mask_picture(arrays: dict, path, title='') -> None:
  """The pair's masks over its envelopes (plots.mask_figure)."""
  # pylint: disable-next=g-import-not-at-top
  from jingle_jax.inference import plots
  plots.save_png(plots.mask_figure(
      arrays['input'], arrays['target'], arrays['output'],
      arrays['input_mask'], arrays['target_mask'], title), path)


def write_pair(directory, space, arrays: dict, saved, title='') -> dict:
  """Saves the `saved` arrays of one pair and draws its mask picture.

  arrays: input, target and output in the model's space, and the two masks,
  each [T, D]; latents are saved raw (denormalised with the
  latent_space.LatentSpace `space`), masks as they are. Returns {path
  without suffix: raw latents} of the latents saved.
  """
  os.makedirs(directory, exist_ok=True)
  written = {}
  for name in saved:
    array = arrays[name]
    raw = (array if name.endswith('_mask') else
           np.asarray(space.denormalise(array)))
    path = os.path.join(directory, name)
    save_npy(path + '.npy', raw)
    if not name.endswith('_mask'):
      written[path] = raw
  save_mask_picture(arrays, os.path.join(directory, 'masks.png'), title)
  return written


def save_wavs(decoder_params, clips: dict) -> None:
  """PATH.wav, the 24 kHz audio of each {PATH: raw latents}."""
  if decoder_params is None:
    return
  audio = encodec_decoding.decode_clips(decoder_params, list(clips.values()))
  for path, samples in zip(clips, audio):
    wav_files.write_wav(path + '.wav', samples)
