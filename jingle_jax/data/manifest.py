"""A latent dataset's manifest.json as a typed record, read and written here
only (the dataset's layout: jingle_jax/data/latents.py)."""

import dataclasses
import os

import numpy as np

from jingle_jax.core import files

FORMAT_VERSION = 1
SAMPLE_RATE = 24_000
FRAME_RATE = 75
LATENT_DIM = 128
MANIFEST = 'manifest.json'
SPLITS = ('train', 'val')
DTYPES = ('float16', 'float32')
# EnCodec's encoders that precompute runs: PyTorch's (the reference), or
# its port to JAX.
ENCODERS = ('torch', 'jax')
_SONG_FIELDS = {'id': str, 'source': str, 'split': str,
                'duration': (int, float), 'frames': int, 'shard': str,
                'offset': int}


class LatentDataError(ValueError):
  """A dataset that cannot be used; the message names the file at fault."""


@dataclasses.dataclass(frozen=True)
class SongRecord:
  """One song's entry."""
  id: str  # stable id derived from the source path
  source: str  # source audio path relative to the audio dir
  split: str  # 'train' or 'val'
  duration: float  # seconds of audio
  frames: int  # latent frames: floor(duration x FRAME_RATE)
  shard: str  # the file, in the dataset directory, that holds its latents
  offset: int = 0  # its first frame in the shard
  audio: str | None = None  # its audio file (--keep-audio), or None
  # A truncated file (its audio ends before its header says): the seconds
  # the header promised; the song holds the audio there is.
  header_seconds: float | None = None

  def to_json(self) -> dict:
    return {key: value for key, value in dataclasses.asdict(self).items()
            if value is not None}


@dataclasses.dataclass(frozen=True)
class SkippedFile:
  """An audio file left out of the dataset."""
  source: str  # its path relative to the audio dir
  reason: str  # why, in words


@dataclasses.dataclass(frozen=True)
class Manifest:
  """What manifest.json records of a dataset; written last, so that the
  dataset is complete when it exists."""
  # 'sha256:<hex>' of EnCodec's state dict, or 'random:<seed>'.
  encodec_weights: str
  dtype: str  # the latents': one of DTYPES
  songs: tuple[SongRecord, ...]
  mean: tuple[float, ...]  # [LATENT_DIM] statistics of the train latents
  std: tuple[float, ...]
  skipped: tuple[SkippedFile, ...] = ()
  bandwidth: float | None = None  # recorded; latents are not quantised
  min_seconds: float | None = None  # shorter songs were left out
  decoder: str | None = None  # EnCodec's decoder weights for JAX, or None
  encoder: str = 'torch'  # which of ENCODERS encoded the songs

  def to_json(self) -> dict:
    return {'format_version': FORMAT_VERSION,
            'encodec_weights': self.encodec_weights,
            'bandwidth': self.bandwidth, 'sample_rate': SAMPLE_RATE,
            'frame_rate': FRAME_RATE, 'latent_dim': LATENT_DIM,
            'dtype': self.dtype, 'min_seconds': self.min_seconds,
            'decoder': self.decoder, 'encoder': self.encoder,
            'songs': [song.to_json() for song in self.songs],
            'mean': list(self.mean), 'std': list(self.std),
            'skipped': [dataclasses.asdict(file) for file in self.skipped]}

  def write(self, path) -> None:
    """Writes manifest.json at `path`, atomically."""
    files.write_json(path, self.to_json())


def _field(values, key, kind, where):
  value = values.get(key) if isinstance(values, dict) else None
  if not isinstance(value, kind) or isinstance(value, bool):
    raise LatentDataError(f'{where}: field {key!r} is {value!r}')
  return value


def _file_name(values, key, where) -> str | None:
  name = values.get(key)
  if name is not None and (not isinstance(name, str)
                           or os.path.basename(name) != name):
    raise LatentDataError(f'{where}: field {key!r} is {name!r}, not a file '
                          'name in the dataset directory')
  return name


def _statistic(values, key, where) -> tuple[float, ...]:
  listed = _field(values, key, list, where)
  try:
    array = np.asarray(listed, np.float32)
  except (TypeError, ValueError):
    array = None
  if (array is None or array.shape != (LATENT_DIM,)
      or not np.all(np.isfinite(array))):
    raise LatentDataError(f'{where}: field {key!r} is not {LATENT_DIM} '
                          'finite numbers')
  return tuple(float(x) for x in listed)


def _song(values, index, where) -> SongRecord:
  where = f'{where}: songs[{index}]'
  if not isinstance(values, dict):
    raise LatentDataError(f'{where} is {values!r}, not an object')
  for key, kind in _SONG_FIELDS.items():
    _field(values, key, kind, where)
  if values['split'] not in SPLITS:
    raise LatentDataError(f'{where}: field \'split\' is '
                          f'{values["split"]!r}, not one of {SPLITS}')
  if values['frames'] < 1 or values['offset'] < 0:
    raise LatentDataError(f'{where}: frames {values["frames"]} must be >= 1 '
                          f'and offset {values["offset"]} >= 0')
  # precompute.encode keeps floor(duration * FRAME_RATE) frames.
  excess = values['duration'] * FRAME_RATE - values['frames']
  if not -1e-6 <= excess < 1 + 1e-6:
    raise LatentDataError(f'{where}: {values["frames"]} frames do not match '
                          f'the duration {values["duration"]} s at '
                          f'{FRAME_RATE} frames/s')
  header_seconds = values.get('header_seconds')
  if header_seconds is not None:
    _field(values, 'header_seconds', (int, float), where)
  return SongRecord(**dict({key: values[key] for key in _SONG_FIELDS},
                           shard=_file_name(values, 'shard', where),
                           audio=_file_name(values, 'audio', where),
                           header_seconds=header_seconds))


def _skipped(values, index, where) -> SkippedFile:
  where = f'{where}: skipped[{index}]'
  return SkippedFile(source=_field(values, 'source', str, where),
                     reason=_field(values, 'reason', str, where))


def read(path) -> Manifest:
  """The manifest at `path`, every field checked: LatentDataError names the
  file and the field."""
  values = files.read_json(path, LatentDataError, 'manifest', ' (an '
                           'unfinished precompute run? run it again)')
  version = _field(values, 'format_version', int, path)
  if version != FORMAT_VERSION:
    raise LatentDataError(f'{path}: format_version {version}, this code reads '
                          f'{FORMAT_VERSION}')
  for key, expected in (('sample_rate', SAMPLE_RATE),
                        ('frame_rate', FRAME_RATE),
                        ('latent_dim', LATENT_DIM)):
    if _field(values, key, int, path) != expected:
      raise LatentDataError(f'{path}: field {key!r} is {values[key]}, '
                            f'expected {expected}')
  if _field(values, 'dtype', str, path) not in DTYPES:
    raise LatentDataError(f'{path}: field \'dtype\' is {values["dtype"]!r}, '
                          f'not one of {DTYPES}')
  encoder = values.get('encoder', 'torch')  # older manifests: PyTorch's
  if encoder not in ENCODERS:
    raise LatentDataError(f'{path}: field \'encoder\' is {encoder!r}, not '
                          f'one of {ENCODERS}')
  songs = tuple(_song(song, index, path) for index, song in
                enumerate(_field(values, 'songs', list, path)))
  if len({song.id for song in songs}) != len(songs):
    raise LatentDataError(f'{path}: song ids are not unique')
  std = _statistic(values, 'std', path)
  if min(std) <= 0:
    raise LatentDataError(f'{path}: field \'std\' holds values <= 0')
  return Manifest(
      encodec_weights=_field(values, 'encodec_weights', str, path),
      dtype=values['dtype'], songs=songs,
      mean=_statistic(values, 'mean', path), std=std,
      skipped=tuple(_skipped(file, index, path) for index, file in
                    enumerate(_field(values, 'skipped', list, path))),
      bandwidth=values.get('bandwidth'), min_seconds=values.get('min_seconds'),
      decoder=_file_name(values, 'decoder', path), encoder=encoder)
