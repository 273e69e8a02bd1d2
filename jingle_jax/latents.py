"""The latent dataset on disk: EnCodec latents of whole songs in .npy shards.

precompute.encode writes it with jingle_jax.latent_writer; training reads it
with LatentDataset. numpy only. A dataset directory holds

  song-<id>.npy     [frames, 128]: the latents of one song (a shard)
  song-<id>.audio.npy  [frames, 320] float16, optional: the song's 24 kHz
                    mono audio, the 320 samples of each latent frame per row
                    (precompute.encode --keep-audio; 48 kB per second of
                    audio, 173 MB per hour, against the latents' 69 MB)
  song-<id>.json    its source file's size and modification time, its
                    duration and the writer settings, so that a rerun can
                    reuse the song instead of encoding it again
  manifest.json     written last; the dataset is complete when it exists:
    format_version, encodec_weights ('sha256:<hex>' of the EnCodec state dict
    or 'random:<seed>'), bandwidth (recorded, latents are not quantised),
    sample_rate, frame_rate, latent_dim, dtype, min_seconds (songs shorter
    were left out),
    songs: [{id, source, split, duration, frames, shard, offset[, audio]}]
    (audio: the song's audio file, when kept),
    mean, std: [128] per-channel statistics of the training latents,
    skipped: [{source, reason}] the audio files left out,
    decoder: the file of EnCodec's decoder weights for JAX
    (jingle_jax.encodec_decoding), or null.

The reader takes any shard layout the songs' shard and offset describe (a
shard may hold several songs one after another, as older datasets do).
"""

import dataclasses
import json
import os

import numpy as np

FORMAT_VERSION = 1
SAMPLE_RATE = 24_000
FRAME_RATE = 75
LATENT_DIM = 128
HOP = SAMPLE_RATE // FRAME_RATE  # audio samples per latent frame
AUDIO_SUFFIX = '.audio.npy'
AUDIO_DTYPE = 'float16'
MANIFEST = 'manifest.json'
SPLITS = ('train', 'val')
DTYPES = ('float16', 'float32')
# encodec_weights of seeded random weights: this prefix, then the seed.
RANDOM_WEIGHTS = 'random:'
# Frames checked for finiteness at a time, to bound memory on large shards.
CHECK_FRAMES = 1 << 16
# Floor of the per-channel std, so that normalising never divides by zero.
MIN_STD = 1e-6
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


@dataclasses.dataclass(frozen=True)
class Song:
  id: str  # stable id derived from the source path
  source: str  # source audio path relative to the audio dir
  split: str  # 'train' or 'val'
  duration: float  # seconds of audio
  latents: np.ndarray  # [frames, 128] read-only memory map, manifest dtype
  # [frames, HOP] float16 read-only memory map of its 24 kHz audio, or None.
  audio: np.ndarray | None = None


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
  for key in ('shard', 'audio'):
    name = song.get(key, '')
    if not isinstance(name, str) or os.path.basename(name) != name:
      raise LatentDataError(f'{where}: field {key!r} is {name!r}, not a file '
                            'name in the dataset directory')


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


def _open_shard(path, dtype, width=LATENT_DIM, what='shard') -> np.ndarray:
  """The [frames, width] array as a read-only memory map, its shape and
  dtype checked."""
  try:
    shard = np.load(path, mmap_mode='r', allow_pickle=False)
  except FileNotFoundError:
    raise LatentDataError(f'{path}: {what} is missing') from None
  except (OSError, ValueError) as e:
    raise LatentDataError(f'{path}: unreadable or truncated {what}: {e}'
                          ) from None
  if shard.ndim != 2 or shard.shape[1] != width:
    raise LatentDataError(f'{path}: shape {shard.shape}, expected '
                          f'[frames, {width}]')
  if shard.dtype != np.dtype(dtype):
    raise LatentDataError(f'{path}: dtype {shard.dtype}, expected {dtype}')
  return shard


def _open_audio(directory, song) -> np.ndarray | None:
  """The song's audio [frames, HOP] (shape and dtype checked), or None.

  Its values are not scanned: the writer refused non-finite ones, and a
  step whose loss is not finite is skipped.
  """
  if 'audio' not in song:
    return None
  path = os.path.join(directory, song['audio'])
  audio = _open_shard(path, AUDIO_DTYPE, HOP, 'audio file')
  if len(audio) != song['frames']:
    raise LatentDataError(f'{path}: {len(audio)} frames of audio, song '
                          f'{song["id"]!r} has {song["frames"]}')
  return audio


def _check_values(latents, mean, std, where) -> None:
  """Refuses non-finite latents and those OUTLIER_STDS from the mean."""
  scale = np.maximum(std, 0.01 * np.mean(std))
  for start in range(0, len(latents), CHECK_FRAMES):
    chunk = np.asarray(latents[start:start + CHECK_FRAMES], np.float32)
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
          duration=float(song['duration']), latents=values,
          audio=_open_audio(directory, song)))

  @property
  def has_audio(self) -> bool:
    """Whether every song has its audio (precompute.encode --keep-audio)."""
    return all(song.audio is not None for song in self._songs)

  def songs(self, split: str) -> list[Song]:
    """The songs of `split`, in manifest order."""
    if split not in SPLITS:
      raise LatentDataError(f'{self.manifest_path}: unknown split {split!r}, '
                            f'splits are {SPLITS}')
    return [song for song in self._songs if song.split == split]
