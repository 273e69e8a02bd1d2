"""EnCodec latents -> 24 kHz wav with the JAX decoder: no torch.

  python -m jingle_jax.decode --manifest L/manifest.json --out-dir W \
      [FILE.npy ...] [--song ID ...] [--batch-size 4]

FILE.npy holds raw latents [frames, 128] (W/FILE.wav) or a batch of them
[N, frames, 128] (W/FILE_0.wav, ...); --song ID decodes the cached latents of
a dataset song (W/ID.wav). The decoder weights are the dataset's
(jingle_jax.encodec_decoding), refused when they are not the encoder's. The
same inputs, names and audio as precompute.torch_decode (EnCodec's PyTorch
decoder). Prints the paths written.
"""

import os

from absl import app
from absl import flags
import numpy as np
import soundfile

from jingle_jax import cli
from jingle_jax import encodec_decoding
from jingle_jax import files
from jingle_jax import latents


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


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('manifest', None, 'manifest.json of the latent dataset '
                      'whose decoder weights decode.')
  flags.DEFINE_string('out-dir', None, 'Folder for the wav files.')
  flags.DEFINE_multi_string('song', [], 'Id of a dataset song to decode.')
  flags.DEFINE_integer('batch-size', 4, '16 s chunks per decoder call.',
                       lower_bound=1)


def run(f, paths) -> None:
  dataset = latents.LatentDataset(f.manifest)
  jobs = clips_to_decode(dataset, paths, f.song)
  if not jobs:
    raise app.UsageError('nothing to decode: pass FILE.npy or --song ID')
  params = encodec_decoding.read(dataset)
  audio = encodec_decoding.decode_clips(params, [clip for _, clip in jobs],
                                        f['batch-size'].value)
  names = [name for name, _ in jobs]
  for path in write_wavs(zip(names, audio), f['out-dir'].value):
    print(path)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['manifest', 'out-dir'])
  cli.run('jingle_jax.decode', run, takes_arguments=True)
