"""Audio folder -> EnCodec latent dataset (jingle_jax.latents).

  python -m precompute.encode --audio-dir A --out-dir L \
      [--encodec-checkpoint PATH | --random-encodec SEED] \
      [--device auto|cpu|cuda] [--val-fraction 0.1] [--seed 42] \
      [--min-seconds 32] [--dtype float16|float32] [--batch-size N] \
      [--keep-audio]

Finds the audio files below A: every format the installed libsndfile reads
(wav, flac, ogg, opus, mp3, aiff, ...), and other common audio suffixes,
which are reported as unreadable. Each file is read once, streamed in
bounded memory whatever its length through channel averaging, resampling to
24 kHz (band-limited sinc) and the EnCodec encoder into [frames, 128]
latents at 75 frames per second. A file that cannot be used (unreadable,
empty, silent, shorter than --min-seconds, a rate outside 8-192 kHz, or any
failure while it is encoded) is skipped and reported with its reason, and
the run goes on. Songs, not pairs, are split into train and val, by the
seed. The EnCodec decoder's weights are written beside the manifest for
decoding without torch (jingle_jax.decode). With --keep-audio each song's
24 kHz mono audio is kept beside its latents as float16 (173 MB per hour of
audio; the float16 latents take 69 MB), so that audio-domain loss terms
compare with the target clip's waveform, as the original did, rather than
with its decoded latents.

Every song is a shard of its own and the unit of work that a rerun keeps:
the rerun reuses the songs whose source files have the size and
modification time they had, encodes the others, and ends with the same
manifest and shards as an uninterrupted run.
"""

import os
import re
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

from jingle_jax import latent_writer
from jingle_jax import latents
from precompute import audio
from precompute import codec
from precompute import encodec_weights
from precompute import export_decoder

# The default shortest song: one pair, an input clip and its target, of 16 s.
MIN_SECONDS = 2 * codec.CHUNK_FRAMES / latents.FRAME_RATE


def find_audio(audio_dir) -> list[str]:
  """Audio file paths below `audio_dir`, relative to it, sorted."""
  suffixes = audio.audio_suffixes()
  found = []
  for root, dirs, files in os.walk(audio_dir):
    dirs.sort()
    found += [os.path.relpath(os.path.join(root, name), audio_dir)
              for name in files
              if os.path.splitext(name)[1].lower() in suffixes]
  return sorted(path.replace(os.sep, '/') for path in found)


def song_id(source: str) -> str:
  """A file-name-safe id of a relative audio path: dir__name, no suffix."""
  stem = os.path.splitext(source)[0].replace('/', '__')
  return re.sub(r'[^A-Za-z0-9._-]', '_', stem)


def fingerprint(path) -> dict:
  """What tells a rerun that a source file is the one encoded before."""
  status = os.stat(path)
  return {'size': status.st_size, 'mtime_ns': status.st_mtime_ns}


def _kept(blocks, song):
  """`blocks`, each also appended to the song's audio."""
  for block in blocks:
    song.append_audio(block)
    yield block


def _reported(blocks):
  """`blocks`, with any failure to produce them raised as BadAudio."""
  try:
    yield from blocks
  except audio.BadAudio:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise audio.BadAudio(f'failed while encoding: {type(e).__name__}: {e}'
                         ) from e


def encode_song(writer, path, source, identifier, status, model, *, device,
                batch_size: int) -> dict:
  """Streams one file (its fingerprint `status`) into the dataset; returns
  its record {id, source, duration, frames}. BadAudio when the file cannot
  be used; a failure to write stops the run."""
  try:
    stream = audio.MonoStream(path)
  except OSError as e:
    raise audio.BadAudio(f'unreadable: {e}') from None
  with writer.song(identifier, source, status) as song:
    blocks = _kept(stream, song) if writer.keeps_audio else stream
    for block in _reported(codec.encode(model, blocks, device=device,
                                        batch_size=batch_size)):
      song.append(block)
    if stream.samples < latents.HOP:
      raise audio.BadAudio('shorter than one latent frame')
    return song.commit(stream.samples / latents.SAMPLE_RATE)


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


def encode_dataset(audio_dir, out_dir, model, weights: str, *, device,
                   val_fraction=0.1, seed=42, dtype='float16',
                   min_seconds=MIN_SECONDS, batch_size=1,
                   keep_audio=False) -> dict:
  """Encodes the songs of `audio_dir` into the dataset `out_dir`; returns
  its manifest."""
  if not os.path.isdir(audio_dir):
    raise ValueError(f'--audio-dir {audio_dir}: not a directory')
  if not 0 <= val_fraction < 1:
    raise ValueError(f'--val-fraction {val_fraction}: expected [0, 1)')
  if not min_seconds > 0:
    raise ValueError(f'--min-seconds {min_seconds}: expected > 0')
  started = time.perf_counter()
  writer = latent_writer.DatasetWriter(out_dir, encodec_weights=weights,
                                       dtype=dtype, keep_audio=keep_audio)
  songs, skipped, ids = [], [], {}
  encoded_seconds = 0.0
  with tqdm.tqdm(find_audio(audio_dir), unit='song',
                 dynamic_ncols=True) as bar:
    for source in bar:
      path = os.path.join(audio_dir, source)
      identifier = song_id(source)
      try:
        if identifier in ids:
          raise audio.BadAudio(f'song id {identifier!r} is taken by '
                               f'{ids[identifier]}')
        try:
          status = fingerprint(path)
        except OSError as e:
          raise audio.BadAudio(f'unreadable: {e}') from None
        record = writer.cached(identifier, source, status)
        if record is None:
          record = encode_song(writer, path, source, identifier, status,
                               model, device=device, batch_size=batch_size)
          encoded_seconds += record['duration']
        if record['duration'] < min_seconds:
          raise audio.BadAudio(f'{record["duration"]:.2f} s is shorter than '
                               f'--min-seconds {min_seconds:g}')
      except audio.BadAudio as e:
        skipped.append({'source': source, 'reason': str(e)})
        logging.warning('skipping %s: %s', source, e)
        continue
      ids[identifier] = source
      songs.append(record)
      bar.set_postfix_str(f'{len(songs)} kept, {encoded_seconds:.0f} '
                          'audio-s encoded')
  if not songs:
    raise ValueError(f'--audio-dir {audio_dir}: no usable audio files')
  assign_splits(songs, val_fraction, seed)
  decoder = export_decoder.export(out_dir, model, weights)
  manifest = writer.finish(songs, skipped, min_seconds=min_seconds,
                           decoder=decoder)
  elapsed = time.perf_counter() - started
  total = sum(song['duration'] for song in songs)
  logging.info('%d songs (%.1f s of audio; %.1f s encoded now) in %.1f s '
               '(%.1fx real time), %d skipped: %s', len(songs), total,
               encoded_seconds, elapsed, encoded_seconds / elapsed,
               len(skipped), os.path.join(out_dir, latents.MANIFEST))
  return manifest


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('audio-dir', None, 'Folder of songs (wav, flac, ogg, '
                      'opus, mp3, ...; searched recursively).')
  flags.DEFINE_string('out-dir', None, 'Latent dataset folder to write.')
  flags.DEFINE_string('encodec-checkpoint', None, 'Local EnCodec 24 kHz '
                      'state dict (default: the pretrained download).')
  flags.DEFINE_integer('random-encodec', None, 'Seed of random EnCodec '
                       'weights: for tests and demos only.')
  flags.DEFINE_string('device', 'auto', 'auto, cpu or cuda.')
  flags.DEFINE_float('val-fraction', 0.1, 'Fraction of songs for val.')
  flags.DEFINE_integer('seed', 42, 'Seed of the train/val split.')
  flags.DEFINE_enum('dtype', 'float16', latents.DTYPES, 'Latent storage.')
  flags.DEFINE_float('min-seconds', MIN_SECONDS, 'Shortest song kept, in '
                     'seconds (default: one pair of 16 s clips).')
  flags.DEFINE_integer('batch-size', None, '16 s chunks per EnCodec call; '
                       'default: 1 on the CPU (faster and leaner there than '
                       'more), 4 on a GPU.',
                       lower_bound=1)
  flags.DEFINE_bool('keep-audio', False, 'Also keep each song\'s 24 kHz mono '
                    'audio (float16, 173 MB per hour) for audio-domain loss '
                    'terms against the real target waveform.')


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
                   dtype=f.dtype, min_seconds=f['min-seconds'].value,
                   batch_size=f['batch-size'].value or (
                       4 if device.type == 'cuda' else 1),
                   keep_audio=f['keep-audio'].value)
  except (ValueError, OSError, encodec_weights.WeightsError) as e:
    sys.exit(f'precompute.encode: error: {e}')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['audio-dir', 'out-dir'])
  app.run(main)
