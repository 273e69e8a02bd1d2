"""The latent dataset on disk: EnCodec latents of whole songs in .npy shards.

precompute.encode writes it with DatasetWriter; training reads it with
LatentDataset. numpy only. A dataset directory holds

  song-<id>.npy     [frames, 128]: the latents of one song (a shard)
  song-<id>.json    its source file's size and modification time, its
                    duration and the writer settings, so that a rerun can
                    reuse the song instead of encoding it again
  manifest.json     written last; the dataset is complete when it exists:
    format_version, encodec_weights ('sha256:<hex>' of the EnCodec state dict
    or 'random:<seed>'), bandwidth (recorded, latents are not quantised),
    sample_rate, frame_rate, latent_dim, dtype, min_seconds (songs shorter
    were left out),
    songs: [{id, source, split, duration, frames, shard, offset}],
    mean, std: [128] per-channel statistics of the training latents,
    skipped: [{source, reason}] the audio files left out.

The reader takes any shard layout the songs' shard and offset describe (a
shard may hold several songs one after another, as older datasets do).
"""

import contextlib
import dataclasses
import io
import json
import os
import secrets

import numpy as np

FORMAT_VERSION = 1
SAMPLE_RATE = 24_000
FRAME_RATE = 75
LATENT_DIM = 128
MANIFEST = 'manifest.json'
SPLITS = ('train', 'val')
DTYPES = ('float16', 'float32')
# Frames checked for finiteness at a time, to bound memory on large shards.
_CHECK_FRAMES = 1 << 16
# Floor of the per-channel std, so that normalising never divides by zero.
_MIN_STD = 1e-6
# Latents further than this many standard deviations from the manifest's
# mean are refused at load (e.g. float16 overflow written as 65504); each
# channel's std counts as at least 1% of the channels' mean std, so that a
# channel constant in training does not make every deviation extreme.
OUTLIER_STDS = 1000.0
_SONG_FIELDS = {'id': str, 'source': str, 'split': str,
                'duration': (int, float), 'frames': int, 'shard': str,
                'offset': int}


class LatentDataError(ValueError):
  """A dataset that cannot be used; the message names the file at fault."""


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
  """Opens a temporary file beside `path` that replaces it on success.

  An exception leaves `path` as it was and removes the temporary file; a
  killed process leaves `path` as it was and at most a hidden .tmp file.
  """
  path = os.fspath(path)
  temporary = os.path.join(
      os.path.dirname(path),
      f'.{os.path.basename(path)}.{secrets.token_hex(4)}.tmp')
  # Unlike tempfile's 0600, the file gets the permissions the umask gives.
  fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def write_text_atomic(path, text: str) -> None:
  """Writes `text` to `path` (its directory made if needed), atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_write(path, 'w') as f:
    f.write(text)


def _write_json(path, value) -> None:
  with atomic_write(path, 'w') as f:
    json.dump(value, f, indent=1)
    f.write('\n')


@dataclasses.dataclass(frozen=True)
class Song:
  id: str  # stable id derived from the source path
  source: str  # source audio path relative to the audio dir
  split: str  # 'train' or 'val'
  duration: float  # seconds of audio
  latents: np.ndarray  # [frames, 128] read-only memory map, manifest dtype


def _field(manifest, key, kind, where):
  value = manifest.get(key) if isinstance(manifest, dict) else None
  if not isinstance(value, kind) or isinstance(value, bool):
    raise LatentDataError(f'{where}: field {key!r} is {value!r}')
  return value


def _statistic(manifest, key, where) -> np.ndarray:
  values = _field(manifest, key, list, where)
  try:
    array = np.asarray(values, np.float32)
  except (TypeError, ValueError):
    array = None
  if (array is None or array.shape != (LATENT_DIM,)
      or not np.all(np.isfinite(array))):
    raise LatentDataError(f'{where}: field {key!r} is not {LATENT_DIM} '
                          'finite numbers')
  return array


def _check_song(song, index, where) -> None:
  where = f'{where}: songs[{index}]'
  if not isinstance(song, dict):
    raise LatentDataError(f'{where} is {song!r}, not an object')
  for key, kind in _SONG_FIELDS.items():
    _field(song, key, kind, where)
  if song['split'] not in SPLITS:
    raise LatentDataError(f'{where}: field \'split\' is {song["split"]!r}, '
                          f'not one of {SPLITS}')
  if song['frames'] < 1 or song['offset'] < 0:
    raise LatentDataError(f'{where}: frames {song["frames"]} must be >= 1 '
                          f'and offset {song["offset"]} >= 0')
  # precompute.encode keeps floor(duration * FRAME_RATE) frames.
  excess = song['duration'] * FRAME_RATE - song['frames']
  if not -1e-6 <= excess < 1 + 1e-6:
    raise LatentDataError(f'{where}: {song["frames"]} frames do not match '
                          f'the duration {song["duration"]} s at '
                          f'{FRAME_RATE} frames/s')
  if os.path.basename(song['shard']) != song['shard']:
    raise LatentDataError(f'{where}: field \'shard\' is {song["shard"]!r}, '
                          'not a file name in the dataset directory')


def _read_manifest(path) -> dict:
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise LatentDataError(f'{path}: no such manifest (an unfinished '
                          'precompute run? run it again)') from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise LatentDataError(f'{path}: unreadable manifest: {e}') from None
  version = _field(manifest, 'format_version', int, path)
  if version != FORMAT_VERSION:
    raise LatentDataError(f'{path}: format_version {version}, this code reads '
                          f'{FORMAT_VERSION}')
  for key, expected in (('sample_rate', SAMPLE_RATE),
                        ('frame_rate', FRAME_RATE),
                        ('latent_dim', LATENT_DIM)):
    if _field(manifest, key, int, path) != expected:
      raise LatentDataError(f'{path}: field {key!r} is {manifest[key]}, '
                            f'expected {expected}')
  if _field(manifest, 'dtype', str, path) not in DTYPES:
    raise LatentDataError(f'{path}: field \'dtype\' is {manifest["dtype"]!r}, '
                          f'not one of {DTYPES}')
  _field(manifest, 'encodec_weights', str, path)
  _field(manifest, 'skipped', list, path)
  songs = _field(manifest, 'songs', list, path)
  for index, song in enumerate(songs):
    _check_song(song, index, path)
  ids = [song['id'] for song in songs]
  if len(set(ids)) != len(ids):
    raise LatentDataError(f'{path}: song ids are not unique')
  return manifest


def _open_shard(path, dtype) -> np.ndarray:
  """The shard as a read-only memory map, its shape and dtype checked."""
  try:
    shard = np.load(path, mmap_mode='r', allow_pickle=False)
  except FileNotFoundError:
    raise LatentDataError(f'{path}: shard is missing') from None
  except (OSError, ValueError) as e:
    raise LatentDataError(f'{path}: unreadable or truncated shard: {e}'
                          ) from None
  if shard.ndim != 2 or shard.shape[1] != LATENT_DIM:
    raise LatentDataError(f'{path}: shape {shard.shape}, expected '
                          f'[frames, {LATENT_DIM}]')
  if shard.dtype != np.dtype(dtype):
    raise LatentDataError(f'{path}: dtype {shard.dtype}, the manifest says '
                          f'{dtype}')
  return shard


def _check_values(latents, mean, std, where) -> None:
  """Refuses non-finite latents and those OUTLIER_STDS from the mean."""
  scale = np.maximum(std, 0.01 * np.mean(std))
  for start in range(0, len(latents), _CHECK_FRAMES):
    chunk = np.asarray(latents[start:start + _CHECK_FRAMES], np.float32)
    if not np.all(np.isfinite(chunk)):
      raise LatentDataError(f'{where}: holds non-finite values')
    deviation = np.abs(chunk - mean) / scale
    if np.any(deviation > OUTLIER_STDS):
      frame, channel = np.unravel_index(np.argmax(deviation), chunk.shape)
      raise LatentDataError(
          f'{where}: frame {start + frame}, channel {channel} is '
          f'{chunk[frame, channel]:.6g}, {deviation[frame, channel]:.3g} '
          f'standard deviations from the manifest\'s mean (the bound is '
          f'{OUTLIER_STDS:g})')


class LatentDataset:
  """A finished dataset, validated: the manifest and every shard.

  `path` is the dataset directory or its manifest.json.
  """

  def __init__(self, path):
    path = os.fspath(path)
    self.manifest_path = (os.path.join(path, MANIFEST) if os.path.isdir(path)
                          else path)
    self.manifest = _read_manifest(self.manifest_path)
    self.mean = _statistic(self.manifest, 'mean', self.manifest_path)
    self.std = _statistic(self.manifest, 'std', self.manifest_path)
    if np.any(self.std <= 0):
      raise LatentDataError(f'{self.manifest_path}: field \'std\' holds '
                            'values <= 0')
    directory = os.path.dirname(self.manifest_path)
    shards = {}
    self._songs = []
    for song in self.manifest['songs']:
      name = song['shard']
      if name not in shards:
        shards[name] = _open_shard(os.path.join(directory, name),
                                   self.manifest['dtype'])
      end = song['offset'] + song['frames']
      if end > len(shards[name]):
        raise LatentDataError(
            f'{os.path.join(directory, name)}: {len(shards[name])} frames, '
            f'song {song["id"]!r} of {self.manifest_path} ends at {end}')
      values = shards[name][song['offset']:end]
      _check_values(values, self.mean, self.std,
                    f'{os.path.join(directory, name)}: song {song["id"]!r}')
      self._songs.append(Song(
          id=song['id'], source=song['source'], split=song['split'],
          duration=float(song['duration']), latents=values))

  def songs(self, split: str) -> list[Song]:
    """The songs of `split`, in manifest order."""
    if split not in SPLITS:
      raise LatentDataError(f'{self.manifest_path}: unknown split {split!r}, '
                            f'splits are {SPLITS}')
    return [song for song in self._songs if song.split == split]


class DatasetWriter:
  """Writes song shards, then the manifest; every file atomically.

  Opening a writer removes the directory's manifest, so the dataset reads as
  unfinished until finish() writes the new one.
  """

  def __init__(self, out_dir, *, encodec_weights: str, dtype='float16',
               bandwidth=6.0):
    if dtype not in DTYPES:
      raise ValueError(f'dtype {dtype!r} is not one of {DTYPES}')
    self.out_dir = os.fspath(out_dir)
    self.settings = {'format_version': FORMAT_VERSION,
                     'encodec_weights': encodec_weights, 'dtype': dtype,
                     'bandwidth': float(bandwidth)}
    os.makedirs(self.out_dir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(self.out_dir, MANIFEST))

  def _path(self, song_id: str, suffix: str) -> str:
    name = f'song-{song_id}{suffix}'
    if not song_id or os.path.basename(name) != name:
      raise ValueError(f'song id {song_id!r} is not a plain file name')
    return os.path.join(self.out_dir, name)

  def cached(self, song_id: str, source: str, fingerprint=None):
    """The record {id, source, duration, frames} of the song when an earlier
    run wrote it from this source (the same `fingerprint`, e.g. its size and
    modification time) with these settings; None otherwise."""
    try:
      with open(self._path(song_id, '.json')) as f:
        written = json.load(f)
      shard = np.load(self._path(song_id, '.npy'), mmap_mode='r')
    except (OSError, ValueError):
      return None
    expected = {'settings': self.settings, 'source': source,
                'fingerprint': fingerprint}
    if (not isinstance(written, dict) or
        any(written.get(key) != value for key, value in expected.items())
        or shard.shape != (written.get('frames'), LATENT_DIM)
        or shard.dtype != np.dtype(self.settings['dtype'])):
      return None
    return {'id': song_id, 'source': source,
            'duration': written['duration'], 'frames': written['frames']}

  def song(self, song_id: str, source: str, fingerprint=None) -> 'SongWriter':
    """A context in which to write one song's latents, block by block."""
    return SongWriter(self, song_id, source, fingerprint)

  def _train_statistics(self, songs):
    """Per-channel mean and std over every training frame (float64)."""
    total = np.zeros(LATENT_DIM)
    total_squares = np.zeros(LATENT_DIM)
    count = 0
    for song in songs:
      if song['split'] != 'train':
        continue
      shard = np.load(self._path(song['id'], '.npy'), mmap_mode='r')
      for start in range(0, len(shard), _CHECK_FRAMES):
        frames = shard[start:start + _CHECK_FRAMES].astype(np.float64)
        total += frames.sum(0)
        total_squares += np.square(frames).sum(0)
      count += len(shard)
    if not count:
      raise ValueError(f'{self.out_dir}: no training songs to compute the '
                       'latent statistics from')
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0))
    return mean, np.maximum(std, _MIN_STD)

  def finish(self, songs: list[dict], skipped: list[dict],
             min_seconds=None) -> dict:
    """Writes manifest.json and returns it.

    songs: the written songs' records with their split, in manifest order;
    skipped: [{source, reason}]; min_seconds: the shortest song kept.
    """
    ids = [song['id'] for song in songs]
    if len(set(ids)) != len(ids):
      raise ValueError(f'{self.out_dir}: song ids are not unique')
    mean, std = self._train_statistics(songs)
    manifest = {
        'format_version': FORMAT_VERSION,
        'encodec_weights': self.settings['encodec_weights'],
        'bandwidth': self.settings['bandwidth'],
        'sample_rate': SAMPLE_RATE,
        'frame_rate': FRAME_RATE,
        'latent_dim': LATENT_DIM,
        'dtype': self.settings['dtype'],
        'min_seconds': min_seconds,
        'songs': [{'id': song['id'], 'source': song['source'],
                   'split': song['split'], 'duration': song['duration'],
                   'frames': song['frames'],
                   'shard': os.path.basename(self._path(song['id'], '.npy')),
                   'offset': 0} for song in songs],
        'mean': [float(x) for x in mean.astype(np.float32)],
        'std': [float(x) for x in std.astype(np.float32)],
        'skipped': list(skipped),
    }
    _write_json(os.path.join(self.out_dir, MANIFEST), manifest)
    return manifest


class SongWriter:
  """One song's shard, written as its latents arrive (bounded memory).

    with writer.song(song_id, source, fingerprint) as song:
      for latents in blocks:
        song.append(latents)
      record = song.commit(duration)

  Nothing is kept unless commit() ran and the block ended without an
  exception; the .json that vouches for the .npy is written last.
  """

  _HEADER_BYTES = 128  # of the .npy header for any [frames, 128] shape

  def __init__(self, writer: DatasetWriter, song_id, source, fingerprint):
    self._settings, self._id = writer.settings, song_id
    self._npy, self._json = (writer._path(song_id, suffix)
                             for suffix in ('.npy', '.json'))
    self._source, self._fingerprint = source, fingerprint
    self._dtype = np.dtype(self._settings['dtype'])
    self._frames, self._record = 0, None
    self._stack = contextlib.ExitStack()

  def __enter__(self):
    # The old record goes first: a run killed before the new record is
    # written must not find a record that vouches for the new data.
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._json)
    self._file = self._stack.enter_context(atomic_write(self._npy))
    self._file.seek(self._HEADER_BYTES)
    return self

  def append(self, latents) -> None:
    """Appends [frames, 128] latents, stored in the dataset's dtype."""
    latents = np.asarray(latents)
    if latents.ndim != 2 or latents.shape[1] != LATENT_DIM:
      raise ValueError(f'song {self._id!r}: latents of shape '
                       f'{latents.shape}, expected [frames, {LATENT_DIM}]')
    with np.errstate(over='ignore'):  # overflow is reported just below
      stored = latents.astype(self._dtype)
    if not np.all(np.isfinite(stored)):
      raise ValueError(f'song {self._id!r}: latents hold non-finite values '
                       f'as {self._dtype}')
    self._file.write(np.ascontiguousarray(stored).tobytes())
    self._frames += len(stored)

  def commit(self, duration: float) -> dict:
    """Completes the shard of `duration` seconds of audio; its record."""
    if not self._frames:
      raise ValueError(f'song {self._id!r}: no latent frames')
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        'descr': np.lib.format.dtype_to_descr(self._dtype),
        'fortran_order': False, 'shape': (self._frames, LATENT_DIM)})
    if header.tell() != self._HEADER_BYTES:  # numpy pads to 64-byte lines
      raise RuntimeError(f'.npy header of {header.tell()} bytes')
    self._file.seek(0)
    self._file.write(header.getvalue())
    self._record = {'id': self._id, 'source': self._source,
                    'duration': float(duration), 'frames': self._frames}
    return dict(self._record)

  def __exit__(self, exc_type, exc, traceback):
    if exc_type is not None or self._record is None:
      # atomic_write, seeing an exception, removes the unfinished .npy.
      error = exc or ValueError(f'song {self._id!r}: left without commit()')
      self._stack.__exit__(type(error), error, traceback)
      if exc is None:
        raise error
      return False
    self._stack.__exit__(None, None, None)  # the .npy takes its place
    _write_json(self._json, {
        'settings': self._settings, 'source': self._source,
        'fingerprint': self._fingerprint,
        'duration': self._record['duration'],
        'frames': self._record['frames']})
    return False
