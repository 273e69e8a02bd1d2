"""The latent dataset on disk: EnCodec latents of whole songs in .npy shards.

precompute.encode writes it with DatasetWriter; training reads it with
LatentDataset. numpy only. A dataset directory holds

  shard_NNNNN.npy   [frames, 128]: the latents of its songs, one after another
  shard_NNNNN.json  the shard's songs, offsets and writer settings, so that a
                    rerun can reuse the shard instead of encoding it again
  manifest.json     written last; the dataset is complete when it exists:
    format_version, encodec_weights ('sha256:<hex>' of the EnCodec state dict
    or 'random:<seed>'), bandwidth (recorded, latents are not quantised),
    sample_rate, frame_rate, latent_dim, dtype,
    songs: [{id, source, split, duration, frames, shard, offset}],
    mean, std: [128] per-channel statistics of the training latents,
    skipped: [{source, reason}] the audio files left out.
"""

import contextlib
import dataclasses
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
  """The shard as a read-only memory map, checked whole."""
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
  for start in range(0, len(shard), _CHECK_FRAMES):
    if not np.all(np.isfinite(shard[start:start + _CHECK_FRAMES])):
      raise LatentDataError(f'{path}: holds non-finite values')
  return shard


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
      self._songs.append(Song(
          id=song['id'], source=song['source'], split=song['split'],
          duration=float(song['duration']),
          latents=shards[name][song['offset']:end]))

  def songs(self, split: str) -> list[Song]:
    """The songs of `split`, in manifest order."""
    if split not in SPLITS:
      raise LatentDataError(f'{self.manifest_path}: unknown split {split!r}, '
                            f'splits are {SPLITS}')
    return [song for song in self._songs if song.split == split]


class DatasetWriter:
  """Writes shards, then the manifest; every file atomically.

  Opening a writer removes the directory's manifest, so the dataset reads as
  unfinished until finish() writes the new one. Shards count in the order
  they are written or reused; the manifest lists their songs in that order.
  """

  def __init__(self, out_dir, *, encodec_weights: str, dtype='float16',
               bandwidth=6.0):
    if dtype not in DTYPES:
      raise ValueError(f'dtype {dtype!r} is not one of {DTYPES}')
    self.out_dir = os.fspath(out_dir)
    self.settings = {'format_version': FORMAT_VERSION,
                     'encodec_weights': encodec_weights, 'dtype': dtype,
                     'bandwidth': float(bandwidth)}
    self._songs = []  # manifest records of the shards so far
    os.makedirs(self.out_dir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(self.out_dir, MANIFEST))

  def _shard_path(self, name, suffix) -> str:
    if not name or os.path.basename(name) != name or '.' in name:
      raise ValueError(f'shard name {name!r} is not a plain file stem')
    return os.path.join(self.out_dir, name + suffix)

  def reuse_shard(self, name: str, records: list[dict]) -> bool:
    """Counts shard `name` as written when an earlier run wrote it with
    these songs (id, source, duration) and these settings.

    records: as for write_shard, without latents.
    """
    try:
      with open(self._shard_path(name, '.json')) as f:
        written = json.load(f)
      shard = np.load(self._shard_path(name, '.npy'), mmap_mode='r')
    except (OSError, ValueError):
      return False
    if (not isinstance(written, dict)
        or written.get('settings') != self.settings):
      return False
    keys = ('id', 'source', 'duration')
    songs = written.get('songs')
    try:
      if ([[song[k] for k in keys] for song in songs]
          != [[record[k] for k in keys] for record in records]
          or shard.shape != (sum(s['frames'] for s in songs), LATENT_DIM)):
        return False
    except (KeyError, TypeError):
      return False
    self._add(name, records, songs)
    return True

  def write_shard(self, name: str, songs: list[tuple[dict, np.ndarray]]):
    """Writes one shard: songs are (record, latents [frames, 128]) with
    records holding id, source, split and duration."""
    parts, placed, offset = [], [], 0
    for record, latents in songs:
      latents = np.asarray(latents)
      if (latents.ndim != 2 or latents.shape[1] != LATENT_DIM
          or not len(latents)):
        raise ValueError(f'song {record["id"]!r}: latents of shape '
                         f'{latents.shape}, expected [frames, {LATENT_DIM}]')
      with np.errstate(over='ignore'):  # overflow is reported just below
        latents = latents.astype(self.settings['dtype'])
      if not np.all(np.isfinite(latents)):
        raise ValueError(f'song {record["id"]!r}: latents hold non-finite '
                         f'values as {self.settings["dtype"]}')
      parts.append(latents)
      placed.append({'id': record['id'], 'source': record['source'],
                     'duration': record['duration'],
                     'frames': len(latents), 'offset': offset})
      offset += len(latents)
    # The old record goes first: a run killed before the new record is
    # written must not find a record that vouches for the new data.
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._shard_path(name, '.json'))
    with atomic_write(self._shard_path(name, '.npy')) as f:
      np.save(f, np.concatenate(parts))
    _write_json(self._shard_path(name, '.json'),
                {'settings': self.settings, 'songs': placed})
    self._add(name, [record for record, _ in songs], placed)

  def _add(self, name, records, placed) -> None:
    for record, where in zip(records, placed):
      self._songs.append({
          'id': record['id'], 'source': record['source'],
          'split': record['split'], 'duration': record['duration'],
          'frames': where['frames'], 'shard': name + '.npy',
          'offset': where['offset']})

  def _train_statistics(self):
    """Per-channel mean and std over every training frame (float64)."""
    total = np.zeros(LATENT_DIM)
    total_squares = np.zeros(LATENT_DIM)
    count = 0
    for song in self._songs:
      if song['split'] != 'train':
        continue
      shard = np.load(os.path.join(self.out_dir, song['shard']),
                      mmap_mode='r')
      end = song['offset'] + song['frames']
      for start in range(song['offset'], end, _CHECK_FRAMES):
        frames = shard[start:min(start + _CHECK_FRAMES, end)].astype(
            np.float64)
        total += frames.sum(0)
        total_squares += np.square(frames).sum(0)
      count += song['frames']
    if not count:
      raise ValueError(f'{self.out_dir}: no training songs to compute the '
                       'latent statistics from')
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0))
    return mean, np.maximum(std, _MIN_STD)

  def finish(self, skipped: list[dict]) -> dict:
    """Writes manifest.json (skipped: [{source, reason}]) and returns it."""
    ids = [song['id'] for song in self._songs]
    if len(set(ids)) != len(ids):
      raise ValueError(f'{self.out_dir}: song ids are not unique')
    mean, std = self._train_statistics()
    manifest = {
        'format_version': FORMAT_VERSION,
        'encodec_weights': self.settings['encodec_weights'],
        'bandwidth': self.settings['bandwidth'],
        'sample_rate': SAMPLE_RATE,
        'frame_rate': FRAME_RATE,
        'latent_dim': LATENT_DIM,
        'dtype': self.settings['dtype'],
        'songs': self._songs,
        'mean': [float(x) for x in mean.astype(np.float32)],
        'std': [float(x) for x in std.astype(np.float32)],
        'skipped': list(skipped),
    }
    _write_json(os.path.join(self.out_dir, MANIFEST), manifest)
    return manifest
