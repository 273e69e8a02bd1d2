"""EnCodec latents -> 24 kHz wav, with the weights a latent dataset records.

  python -m precompute.decode --manifest L/manifest.json --out-dir W \
      [FILE.npy ...] [--song ID ...] \
      [--encodec-checkpoint PATH | --random-encodec SEED] [--device auto]

FILE.npy holds raw latents [frames, 128] (W/FILE.wav) or a batch of them
[N, frames, 128] (W/FILE_0.wav, ...); --song ID decodes the cached latents of
a dataset song (W/ID.wav). The weights are the ones the manifest records:
random ones are rebuilt from their seed, others are the pretrained download
or --encodec-checkpoint, and weights whose identity differs from the
manifest's are refused. Prints the paths written.
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np
import soundfile

from jingle_jax import latents
from precompute import codec
from precompute import encodec_weights


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


def clips_to_decode(dataset, files, song_ids):
  """[(wav file name, clip)] of the .npy files and the dataset's songs."""
  jobs = []
  for path in files:
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
    jobs.append((song_id, songs[song_id].latents))
  names = [name for name, _ in jobs]
  if len(set(names)) != len(names):
    raise ValueError(f'two outputs would have the same name: {names}')
  return jobs


def matching_weights(dataset, checkpoint=None, random_seed=None):
  """The EnCodec model of the weights the dataset records (random ones from
  their seed when no weights are given); WeightsError for other weights."""
  recorded = dataset.manifest['encodec_weights']
  if (checkpoint is None and random_seed is None
      and recorded.startswith('random:')):
    try:
      random_seed = int(recorded.removeprefix('random:'))
    except ValueError:
      raise latents.LatentDataError(
          f'{dataset.manifest_path}: field \'encodec_weights\' is '
          f'{recorded!r}') from None
  model, loaded = encodec_weights.load(checkpoint, random_seed)
  if loaded != recorded:
    raise encodec_weights.WeightsError(
        f'{dataset.manifest_path} was encoded with EnCodec weights '
        f'{recorded}, but the weights given are {loaded}: refusing to '
        'decode with other weights than the encoder\'s')
  return model


def decode_to_wavs(model, jobs, out_dir, *, device,
                   batch_size: int) -> list[str]:
  """Writes out_dir/NAME.wav (float, 24 kHz) for each (name, clip)."""
  os.makedirs(out_dir, exist_ok=True)
  audio = codec.decode(model, [clip for _, clip in jobs], device=device,
                       batch_size=batch_size)
  paths = []
  for (name, _), samples in zip(jobs, audio):
    path = os.path.join(out_dir, name + '.wav')
    with latents.atomic_write(path) as f:
      soundfile.write(f, samples, latents.SAMPLE_RATE, subtype='FLOAT',
                      format='WAV')
    paths.append(path)
  return paths


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('manifest', None, 'manifest.json of the latent dataset '
                      'whose EnCodec weights decode.')
  flags.DEFINE_string('out-dir', None, 'Folder for the wav files.')
  flags.DEFINE_multi_string('song', [], 'Id of a dataset song to decode.')
  flags.DEFINE_string('encodec-checkpoint', None, 'Local EnCodec 24 kHz '
                      'state dict (default: what the manifest records).')
  flags.DEFINE_integer('random-encodec', None, 'Seed of random EnCodec '
                       'weights (default: what the manifest records).')
  flags.DEFINE_string('device', 'auto', 'auto, cpu or cuda.')
  flags.DEFINE_integer('batch-size', 4, '16 s chunks per EnCodec call.',
                       lower_bound=1)


def main(argv):
  f = flags.FLAGS
  if len(argv) < 2 and not f.song:
    raise app.UsageError('nothing to decode: pass FILE.npy or --song ID')
  try:
    dataset = latents.LatentDataset(f.manifest)
    jobs = clips_to_decode(dataset, argv[1:], f.song)
    model = matching_weights(dataset, f['encodec-checkpoint'].value,
                             f['random-encodec'].value)
    device = encodec_weights.device(f.device)
    paths = decode_to_wavs(model.to(device), jobs, f['out-dir'].value,
                           device=device, batch_size=f['batch-size'].value)
  except (ValueError, OSError, encodec_weights.WeightsError) as e:
    sys.exit(f'precompute.decode: error: {e}')
  for path in paths:
    print(path)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['manifest', 'out-dir'])
  app.run(main)
