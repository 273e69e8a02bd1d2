"""Latent clips to decode and the wav files they become: clips from .npy
files and dataset songs, and 24 kHz wav files written whole (the decode
commands, JAX's and PyTorch's, and the listening pages share them)."""

import os

import numpy as np
import soundfile

from jingle_jax.core import files
from jingle_jax.data import latents


def read_clips(path) -> list[np.ndarray]:
  """The [frames, 128] clips of a .npy file of one clip or a batch."""
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: unreadable .npy file: {e}') from None
  if array.ndim == 2:
    array = array[None]
  if array.ndim != 3 or array.shape[2] != latents.LATENT_DIM:
    raise ValueError(f'{path}: shape {array.shape}, expected [frames, '
                     f'{latents.LATENT_DIM}] or [N, frames, '
                     f'{latents.LATENT_DIM}]')
  if not array.shape[1]:
    raise ValueError(f'{path}: holds no frames')
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f'{path}: dtype {array.dtype} is not a float type')
  if not np.all(np.isfinite(array)):
    raise ValueError(f'{path}: holds non-finite values')
  return list(array)


def clips_to_decode(dataset, paths, song_ids):
  """[(wav file name, clip)] of the .npy files and the dataset's songs."""
  jobs = []
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    clips = read_clips(path)
    names = ([stem] if len(clips) == 1
             else [f'{stem}_{i}' for i in range(len(clips))])
    jobs += zip(names, clips)
  songs = {song.id: song for split in latents.SPLITS
           for song in dataset.songs(split)}
  for song_id in song_ids:
    if song_id not in songs:
      raise ValueError(f'--song {song_id}: no such song in '
                       f'{dataset.manifest_path}')
    jobs.append((song_id, songs[song_id].read()))
  names = [name for name, _ in jobs]
  if len(set(names)) != len(names):
    raise ValueError(f'two outputs would have the same name: {names}')
  return jobs


def write_wav(path, samples, subtype='FLOAT') -> None:
  """Mono float 24 kHz audio as a WAV file (float samples by default),
  atomically."""
  with files.atomic_write(path) as f:
    soundfile.write(f, np.asarray(samples, np.float32), latents.SAMPLE_RATE,
                    subtype=subtype, format='WAV')


def write_wavs(named_audio, out_dir) -> list[str]:
  """Writes out_dir/NAME.wav for each (name, audio); returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, samples in named_audio:
    paths.append(os.path.join(out_dir, name + '.wav'))
    write_wav(paths[-1], samples)
  return paths
