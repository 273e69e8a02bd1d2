"""Audio folder -> EnCodec latent dataset (jingle_jax.latents).

  python -m precompute.encode --audio-dir A --out-dir L \
      [--encodec-checkpoint PATH | --random-encodec SEED] \
      [--device auto|cpu|cuda] [--val-fraction 0.1] [--seed 42] \
      [--dtype float16|float32] [--shard-seconds 1800] [--batch-size 4]

Finds the wav, flac and ogg files below A, reads each with soundfile,
averages its channels, resamples it to 24 kHz (band-limited sinc) and encodes
it once into [frames, 128] latents at 75 frames per second. A file that
cannot be used (unreadable, empty, silent, shorter than one pair of 16 s
clips, an odd channel count or sample rate) is skipped and reported with its
reason. Songs, not pairs, are split into train and val, by the seed.

Songs go to shards of about --shard-seconds of audio; a shard is the unit of
work that a rerun after an interruption keeps: the rerun checks every file
again, reuses the finished shards and encodes the rest, and ends with the
same manifest and shards as an uninterrupted run.
"""

import os
import re
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import soundfile
import torch
import torchaudio
import tqdm

from jingle_jax import latents
from precompute import codec
from precompute import encodec_weights

AUDIO_SUFFIXES = ('.flac', '.ogg', '.wav')
# The shortest song: one pair, an input clip and its target, of 16 s each.
MIN_FRAMES = 2 * codec.CHUNK_FRAMES
SAMPLE_RATES = (8_000, 192_000)  # the accepted range, in Hz
MAX_CHANNELS = 2
SILENCE_PEAK = 1e-4  # -80 dBFS


class BadAudio(ValueError):
  """A file to skip; the message is the reason."""


def find_audio(audio_dir) -> list[str]:
  """Audio file paths below `audio_dir`, relative to it, sorted."""
  found = []
  for root, dirs, files in os.walk(audio_dir):
    dirs.sort()
    found += [os.path.relpath(os.path.join(root, name), audio_dir)
              for name in files if name.lower().endswith(AUDIO_SUFFIXES)]
  return sorted(path.replace(os.sep, '/') for path in found)


def song_id(source: str) -> str:
  """A file-name-safe id of a relative audio path: dir__name, no suffix."""
  stem = os.path.splitext(source)[0].replace('/', '__')
  return re.sub(r'[^A-Za-z0-9._-]', '_', stem)


def read_mono(path):
  """(samples float32 [n], sample rate): channels averaged; BadAudio when
  the file cannot be used."""
  if os.path.getsize(path) == 0:
    raise BadAudio('empty file (0 bytes)')
  try:
    audio, rate = soundfile.read(path, dtype='float32', always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
    raise BadAudio(f'unreadable: {e}') from None
  if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
    raise BadAudio(f'sample rate {rate} Hz outside {SAMPLE_RATES[0]}-'
                   f'{SAMPLE_RATES[1]} Hz')
  if audio.shape[1] > MAX_CHANNELS:
    raise BadAudio(f'{audio.shape[1]} channels, expected mono or stereo')
  if not len(audio):
    raise BadAudio('no audio samples')
  if not np.all(np.isfinite(audio)):
    raise BadAudio('non-finite samples')
  mono = audio.mean(axis=1)
  if np.max(np.abs(mono)) <= SILENCE_PEAK:
    raise BadAudio(f'silent (peak at or below {SILENCE_PEAK})')
  return mono, rate


def resampled_length(length: int, rate: int) -> int:
  """Samples at 24 kHz of `length` samples at `rate` (as resample gives)."""
  return -(-length * latents.SAMPLE_RATE // rate)


def to_24khz(samples, rate: int) -> np.ndarray:
  """Band-limited (windowed sinc) resampling of mono float32 to 24 kHz."""
  if rate == latents.SAMPLE_RATE:
    return samples
  return torchaudio.functional.resample(
      torch.from_numpy(samples), rate, latents.SAMPLE_RATE).numpy()


def load_song(audio_dir, record) -> np.ndarray:
  """The surveyed song `record` as mono 24 kHz float32."""
  path = os.path.join(audio_dir, record['source'])
  expected = round(record['duration'] * latents.SAMPLE_RATE)
  try:
    samples = to_24khz(*read_mono(path))
    if len(samples) != expected:
      raise BadAudio(f'{len(samples)} samples at 24 kHz, not {expected}')
  except BadAudio as e:
    raise ValueError(f'{path}: changed during the run ({e}); run again'
                     ) from None
  return samples


def survey(audio_dir, sources):
  """(records of the usable songs, skipped) with reasons for the others."""
  records, skipped, ids = [], [], {}
  for source in sources:
    try:
      identifier = song_id(source)
      if identifier in ids:
        raise BadAudio(f'song id {identifier!r} is taken by {ids[identifier]}')
      samples, rate = read_mono(os.path.join(audio_dir, source))
      length = resampled_length(len(samples), rate)
      if length // codec.HOP < MIN_FRAMES:
        raise BadAudio(f'{length / latents.SAMPLE_RATE:.2f} s is shorter '
                       f'than one pair (2 x 16 s)')
    except BadAudio as e:
      skipped.append({'source': source, 'reason': str(e)})
      continue
    ids[identifier] = source
    records.append({'id': identifier, 'source': source,
                    'duration': length / latents.SAMPLE_RATE})
  return records, skipped


def assign_splits(records, val_fraction: float, seed: int) -> None:
  """Sets each record's split: round(val_fraction * songs) random songs
  (at least one when the fraction is positive and two songs or more) go to
  val, the rest to train."""
  count = len(records)
  num_val = round(val_fraction * count)
  if val_fraction > 0 and count >= 2:
    num_val = min(max(num_val, 1), count - 1)
  val = set(np.random.default_rng(seed).permutation(count)[:num_val])
  for index, record in enumerate(records):
    record['split'] = 'val' if index in val else 'train'


def plan_shards(records, shard_seconds: float):
  """[(shard name, records)]: consecutive songs, each shard about
  `shard_seconds` of audio (one song at least)."""
  shards, current, seconds = [], [], 0.0
  for record in records:
    if current and seconds + record['duration'] > shard_seconds:
      shards.append(current)
      current, seconds = [], 0.0
    current.append(record)
    seconds += record['duration']
  if current:
    shards.append(current)
  return [(f'shard_{index:05d}', songs) for index, songs in enumerate(shards)]


def encode_dataset(audio_dir, out_dir, model, weights: str, *, device,
                   val_fraction=0.1, seed=42, dtype='float16',
                   shard_seconds=1800.0, batch_size=4) -> dict:
  """Encodes the songs of `audio_dir` into the dataset `out_dir`; returns
  its manifest."""
  if not os.path.isdir(audio_dir):
    raise ValueError(f'--audio-dir {audio_dir}: not a directory')
  if not 0 <= val_fraction < 1:
    raise ValueError(f'--val-fraction {val_fraction}: expected [0, 1)')
  started = time.perf_counter()
  records, skipped = survey(audio_dir, find_audio(audio_dir))
  for record in skipped:
    logging.warning('skipping %s: %s', record['source'], record['reason'])
  if not records:
    raise ValueError(f'--audio-dir {audio_dir}: no usable audio files')
  assign_splits(records, val_fraction, seed)
  writer = latents.DatasetWriter(out_dir, encodec_weights=weights,
                                 dtype=dtype)
  total = sum(record['duration'] for record in records)
  songs_done = 0
  with tqdm.tqdm(total=total, unit='audio-s', unit_scale=True,
                 dynamic_ncols=True) as bar:
    for name, shard in plan_shards(records, shard_seconds):
      reused = writer.reuse_shard(name, shard)
      encoded = []
      for record in shard:
        if not reused:
          encoded += codec.encode(model, [load_song(audio_dir, record)],
                                  device=device, batch_size=batch_size)
        songs_done += 1
        bar.set_postfix_str(f'{songs_done}/{len(records)} songs')
        bar.update(record['duration'])
      if not reused:
        writer.write_shard(name, list(zip(shard, encoded)))
  manifest = writer.finish(skipped)
  elapsed = time.perf_counter() - started
  logging.info('%d songs, %.1f s of audio in %.1f s (%.1fx real time), %d '
               'skipped: %s', len(records), total, elapsed, total / elapsed,
               len(skipped), os.path.join(out_dir, latents.MANIFEST))
  return manifest


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('audio-dir', None, 'Folder of wav/flac/ogg songs.')
  flags.DEFINE_string('out-dir', None, 'Latent dataset folder to write.')
  flags.DEFINE_string('encodec-checkpoint', None, 'Local EnCodec 24 kHz '
                      'state dict (default: the pretrained download).')
  flags.DEFINE_integer('random-encodec', None, 'Seed of random EnCodec '
                       'weights: for tests and demos only.')
  flags.DEFINE_string('device', 'auto', 'auto, cpu or cuda.')
  flags.DEFINE_float('val-fraction', 0.1, 'Fraction of songs for val.')
  flags.DEFINE_integer('seed', 42, 'Seed of the train/val split.')
  flags.DEFINE_enum('dtype', 'float16', latents.DTYPES, 'Latent storage.')
  flags.DEFINE_float('shard-seconds', 1800, 'Audio seconds per shard.')
  flags.DEFINE_integer('batch-size', 4, '16 s chunks per EnCodec call.',
                       lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  try:
    model, weights = encodec_weights.load(f['encodec-checkpoint'].value,
                                          f['random-encodec'].value)
    device = encodec_weights.device(f.device)
    encode_dataset(f['audio-dir'].value, f['out-dir'].value,
                   model.to(device), weights, device=device,
                   val_fraction=f['val-fraction'].value, seed=f.seed,
                   dtype=f.dtype, shard_seconds=f['shard-seconds'].value,
                   batch_size=f['batch-size'].value)
  except (ValueError, OSError, encodec_weights.WeightsError) as e:
    sys.exit(f'precompute.encode: error: {e}')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['audio-dir', 'out-dir'])
  app.run(main)
