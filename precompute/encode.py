"""Audio folder -> EnCodec latent dataset (jingle_jax.data.latents).

  python -m precompute.encode --audio-dir A --out-dir L \
      [--encodec-checkpoint PATH | --random-encodec SEED] \
      [--encoder torch|jax [--encoder-weights W]] \
      [--device auto|cpu|cuda] [--val-fraction 0.1] [--seed 42] \
      [--min-seconds 32] [--dtype float16|float32] [--batch-size N] \
      [--keep-audio] [--num-workers K --worker-index I]

Finds the audio files below A: every format the installed libsndfile reads
(wav, flac, ogg, opus, mp3, aiff, ...), and other common audio suffixes,
which are reported as unreadable. Each file is read once, streamed in
bounded memory whatever its length through channel averaging, resampling to
24 kHz (band-limited sinc) and the EnCodec encoder into [frames, 128]
latents at 75 frames per second. The encoder is PyTorch's by default (the
reference), or with --encoder jax its port to JAX on this host's
accelerators: EnCodec's weights converted once (torch), kept as
L/encodec_jax.msgpack, and given back with --encoder-weights, which then
encodes without torch. The manifest records the encoder; a dataset holds
songs of one encoder only. A file that cannot be used (unreadable,
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

K processes (--num-workers K, --worker-index 0 to K - 1: one per GPU, or a
SLURM array) encode disjoint shares of the songs side by side; each writes
worker-I-of-K.json when done (the files it could not use), and the last to
finish writes the manifest, the same as one process would. A run without
--num-workers after them reuses their songs and finishes the dataset too.
"""

import contextlib
import functools
import hashlib
import json
import os
import re
import time

from absl import flags
from absl import logging
import jax
import numpy as np
import tqdm

from jingle_jax import cli
from jingle_jax.core import files
from jingle_jax.data import audio
from jingle_jax.data import latent_writer
from jingle_jax.data import latents
from jingle_jax.data import manifest
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import encodec_encoding

# The default shortest song: one pair, an input clip and its target, of 16 s.
MIN_SECONDS = 2 * encodec_decoding.CHUNK_FRAMES / latents.FRAME_RATE


class TorchEncoder:
  """EnCodec's PyTorch encoder (the reference); its decoder's converted
  weights are the dataset's."""
  name = 'torch'

  def __init__(self, model, device, batch_size: int = 1):
    self.model, self.device, self.batch_size = model, device, batch_size

  def encode(self, blocks):
    from precompute import codec  # pylint: disable=import-outside-toplevel
    return codec.encode(self.model, blocks, device=self.device,
                        batch_size=self.batch_size)

  def write_decoder(self, out_dir, weights: str) -> str:
    from precompute import jax_weights  # pylint: disable=import-outside-toplevel
    return jax_weights.export(out_dir, self.model, weights)


class JaxEncoder:
  """EnCodec's encoder in JAX with converted weights (encodec_encoding's
  file): no torch."""
  name = 'jax'

  def __init__(self, converted: dict, batch_size: int = 1):
    self.encode = encodec_encoding.JaxEncoder(converted['encoder'],
                                              batch_size).encode
    self._decoder = converted['decoder']

  def write_decoder(self, out_dir, weights: str) -> str:
    encodec_decoding.write(out_dir, self._decoder, weights)
    return encodec_decoding.DECODER_FILE


def find_audio(audio_dir) -> list[str]:
  """Audio file paths below `audio_dir`, relative to it, sorted."""
  suffixes = audio.audio_suffixes()
  found = []
  for root, dirs, names in os.walk(audio_dir):
    dirs.sort()
    found += [os.path.relpath(os.path.join(root, name), audio_dir)
              for name in names
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


def encode_song(writer, path, source, identifier, status, *,
                encoder) -> dict:
  """Streams one file (its fingerprint `status`) into the dataset; returns
  its record {id, source, duration, frames}. BadAudio when the file cannot
  be used; a failure to write stops the run."""
  try:
    stream = audio.MonoStream(path)
  except OSError as e:
    raise audio.BadAudio(f'unreadable: {e}') from None
  with writer.song(identifier, source, status) as song:
    blocks = _kept(stream, song) if writer.keeps_audio else stream
    for block in _reported(encoder.encode(blocks)):
      song.append(block)
    if stream.samples < latents.HOP:
      raise audio.BadAudio('shorter than one latent frame')
    duration = stream.samples / latents.SAMPLE_RATE
    if stream.header_seconds is not None:
      logging.warning('%s is truncated: its header says %.2f s, its audio '
                      'ends at %.2f s; kept with the audio it has (the '
                      "manifest's header_seconds flags it)", source,
                      stream.header_seconds, duration)
    return song.commit(duration, header_seconds=stream.header_seconds)


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


def shares(sources, num_workers: int) -> list[int]:
  """The worker of each source: song ids in turn (a song id's files stay
  together, so that the first usable one keeps the id as in one run)."""
  ids = {}
  for source in sources:
    ids.setdefault(song_id(source), len(ids) % num_workers)
  return [ids[song_id(source)] for source in sources]


def _encode_songs(writer, audio_dir, sources, encode, failures, min_seconds):
  """(records, skipped, new failures, seconds encoded) of `sources`, in
  order: each reused, or known to fail ({source: [fingerprint, reason]}),
  or encoded now."""
  songs, skipped, new_failures, ids = [], [], {}, {}
  encoded_seconds = 0.0
  with tqdm.tqdm(sources, unit='song', dynamic_ncols=True) as bar:
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
          known, reason = failures.get(source, (None, None))
          if known == status:
            raise audio.BadAudio(reason)
          try:
            record = encode(writer, path, source, identifier, status)
          except audio.BadAudio as e:
            new_failures[source] = [status, str(e)]
            raise
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
  return songs, skipped, new_failures, encoded_seconds


class _Parts:
  """What the workers of one run hand over: worker-I-of-K.json, the files
  each found it could not encode, marked with the run (settings, worker
  count, every source's fingerprint), so that parts of another run are
  not merged."""

  def __init__(self, out_dir, num_workers, writer, audio_dir, sources):
    self.out_dir, self.num_workers = out_dir, num_workers
    statuses = []
    for source in sources:
      try:
        statuses.append(fingerprint(os.path.join(audio_dir, source)))
      except OSError:
        statuses.append(None)
    self.run = hashlib.sha256(json.dumps(
        [writer.settings, num_workers, sources, statuses]).encode()
                              ).hexdigest()

  def _path(self, index):
    return os.path.join(self.out_dir,
                        f'worker-{index}-of-{self.num_workers}.json')

  def write(self, index, failures) -> None:
    files.write_json(self._path(index), {'run': self.run,
                                         'failures': failures})

  def remove(self, index) -> None:
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._path(index))

  def failures(self):
    """Every worker's failures, or None while a worker of this run has not
    finished."""
    failures = {}
    for index in range(self.num_workers):
      try:
        with open(self._path(index)) as f:
          part = json.load(f)
      except (OSError, ValueError):
        return None
      if not isinstance(part, dict) or part.get('run') != self.run:
        return None
      failures.update(part['failures'])
    return failures


def encode_dataset(audio_dir, out_dir, encoder, weights: str, *,
                   val_fraction=0.1, seed=42, dtype='float16',
                   min_seconds=MIN_SECONDS, keep_audio=False, num_workers=1,
                   worker_index=0):
  """Encodes the songs of `audio_dir` into the dataset `out_dir` with
  `encoder` (a TorchEncoder or JaxEncoder) of EnCodec's `weights`; returns
  its manifest.

  With num_workers K > 1, encodes the share of worker `worker_index` (of
  K side by side); the worker that finishes last writes the manifest and
  returns it, the others None.
  """
  if not os.path.isdir(audio_dir):
    raise ValueError(f'--audio-dir {audio_dir}: not a directory')
  if not 0 <= val_fraction < 1:
    raise ValueError(f'--val-fraction {val_fraction}: expected [0, 1)')
  if not min_seconds > 0:
    raise ValueError(f'--min-seconds {min_seconds}: expected > 0')
  if not 0 <= worker_index < num_workers:
    raise ValueError(f'--worker-index {worker_index}: expected 0 to '
                     f'--num-workers {num_workers} - 1')
  started = time.perf_counter()
  written = latent_writer.written_encoder(out_dir)
  if written is not None and written[0] != encoder.name:
    raise ValueError(
        f'--encoder {encoder.name}: {out_dir} holds songs encoded with '
        f'--encoder {written[0]} ({written[1]}); a dataset keeps one '
        f'encoder: pass --encoder {written[0]}, or use another --out-dir')
  writer = latent_writer.DatasetWriter(out_dir, encodec_weights=weights,
                                       dtype=dtype, keep_audio=keep_audio,
                                       encoder=encoder.name)
  logging.info('encoding with EnCodec\'s %s encoder',
               'PyTorch' if encoder.name == 'torch' else 'JAX')
  sources = find_audio(audio_dir)
  encode = functools.partial(encode_song, encoder=encoder)
  failures, encoded_seconds = {}, 0.0
  if num_workers > 1:
    parts = _Parts(out_dir, num_workers, writer, audio_dir, sources)
    parts.remove(worker_index)  # unfinished again
    share = [source for source, worker in zip(sources, shares(
        sources, num_workers)) if worker == worker_index]
    _, _, failures, encoded_seconds = _encode_songs(
        writer, audio_dir, share, encode, {}, min_seconds)
    parts.write(worker_index, failures)
    failures = parts.failures()
    if failures is None:
      logging.info('worker %d of %d done (%.1f s of audio encoded); the '
                   'last worker to finish writes the manifest', worker_index,
                   num_workers, encoded_seconds)
      return None
  # Every song is reused here but where a worker left one to do.
  songs, skipped, _, more_seconds = _encode_songs(
      writer, audio_dir, sources, encode, failures, min_seconds)
  encoded_seconds += more_seconds
  if not songs:
    raise ValueError(f'--audio-dir {audio_dir}: no usable audio files')
  assign_splits(songs, val_fraction, seed)
  decoder = encoder.write_decoder(out_dir, weights)
  written = writer.finish(songs, skipped, min_seconds=min_seconds,
                          decoder=decoder)
  elapsed = time.perf_counter() - started
  total = sum(song['duration'] for song in songs)
  logging.info('%d songs (%.1f s of audio; %.1f s encoded now) in %.1f s '
               '(%.1fx real time), %d skipped: %s', len(songs), total,
               encoded_seconds, elapsed, encoded_seconds / elapsed,
               len(skipped), os.path.join(out_dir, latents.MANIFEST))
  return written


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('audio-dir', None, 'Folder of songs (wav, flac, ogg, '
                      'opus, mp3, ...; searched recursively).')
  flags.DEFINE_string('out-dir', None, 'Latent dataset folder to write.')
  cli.define_encodec_flags()
  flags.DEFINE_float('val-fraction', 0.1, 'Fraction of songs for val.')
  flags.DEFINE_integer('seed', 42, 'Seed of the train/val split.')
  flags.DEFINE_enum('dtype', 'float16', manifest.DTYPES, 'Latent storage.')
  flags.DEFINE_float('min-seconds', MIN_SECONDS,
                     'Shortest song kept, in seconds (default: one pair of '
                     '16 s clips).')
  flags.DEFINE_enum('encoder', 'torch', manifest.ENCODERS,
                    'EnCodec\'s encoder: PyTorch\'s (the reference) or its '
                    'port to JAX, on this host\'s accelerators.')
  flags.DEFINE_string('encoder-weights', None, 'With --encoder jax: a '
                      'converted weights file (' + encodec_encoding.WEIGHTS_FILE + ' of a dataset '
                      'encoded before), which encodes without torch; default: '
                      'EnCodec\'s weights converted now and kept as '
                      '--out-dir/' + encodec_encoding.WEIGHTS_FILE + '.')
  flags.DEFINE_integer('batch-size', None, lower_bound=1, help=(
      '16 s chunks per encoder call; default: 1 on the CPU (faster and '
      'leaner there than more), 4 per GPU or TPU.'))
  flags.DEFINE_bool('keep-audio', False, 'Also keep each song\'s 24 kHz mono '
                    'audio (float16, 173 MB per hour) for audio-domain loss '
                    'terms against the real target waveform.')
  flags.DEFINE_integer('num-workers', 1, 'Processes that encode side by side '
                       '(one per GPU, or a SLURM array), each given its '
                       '--worker-index; the last to finish writes the '
                       'manifest.', lower_bound=1)
  flags.DEFINE_integer('worker-index', 0, 'This process\'s share of the '
                       'songs, 0 to --num-workers - 1.', lower_bound=0)


def _torch_model(flag_values):
  """EnCodec's PyTorch model of the flags, on its device, and its weights'
  identity."""
  from precompute import encodec_weights  # pylint: disable=import-outside-toplevel
  model, weights = encodec_weights.load(
      flag_values['encodec-checkpoint'].value,
      flag_values['random-encodec'].value)
  device = encodec_weights.device(flag_values.device)
  return model.to(device), weights, device


def _jax_encoder(flag_values, batch_size):
  """(JaxEncoder, weights' identity) of the flags: the converted file
  given, or EnCodec's weights converted now and kept in the dataset."""
  path = flag_values['encoder-weights'].value
  if path is None:
    from precompute import jax_weights  # pylint: disable=import-outside-toplevel
    model, weights, _ = _torch_model(flag_values)
    path = os.path.join(flag_values['out-dir'].value,
                        encodec_encoding.WEIGHTS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    jax_weights.write_converted(path, model, weights)
    logging.info('EnCodec\'s weights converted for JAX: %s (pass it as '
                 '--encoder-weights to encode without torch)', path)
  elif (flag_values['encodec-checkpoint'].value is not None or
        flag_values['random-encodec'].value is not None):
    raise ValueError('--encoder-weights holds EnCodec\'s weights already: '
                     'drop --encodec-checkpoint and --random-encodec')
  converted = encodec_encoding.read_weights(path)
  return (JaxEncoder(converted, batch_size or (
      1 if jax.default_backend() == 'cpu' else 4 * jax.local_device_count())),
          converted['encodec_weights'])


def run(flag_values):
  batch_size = flag_values['batch-size'].value
  if flag_values.encoder == 'jax':
    encoder, weights = _jax_encoder(flag_values, batch_size)
  else:
    if flag_values['encoder-weights'].value is not None:
      raise ValueError('--encoder-weights: only --encoder jax takes it')
    model, weights, device = _torch_model(flag_values)
    encoder = TorchEncoder(model, device, batch_size or (
        4 if device.type == 'cuda' else 1))
  encode_dataset(flag_values['audio-dir'].value,
                 flag_values['out-dir'].value, encoder, weights,
                 val_fraction=flag_values['val-fraction'].value,
                 seed=flag_values.seed, dtype=flag_values.dtype,
                 min_seconds=flag_values['min-seconds'].value,
                 keep_audio=flag_values['keep-audio'].value,
                 num_workers=flag_values['num-workers'].value,
                 worker_index=flag_values['worker-index'].value)


if __name__ == '__main__':
  cli.run('precompute.encode', run, define_flags,
          required=['audio-dir', 'out-dir'], logs_info=True, runs_torch=True)
