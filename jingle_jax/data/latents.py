"""The latent dataset on disk: EnCodec latents of whole songs in .npy shards.

precompute.encode writes it with jingle_jax.data.latent_writer; training reads
it with LatentDataset (numpy and the standard library). A dataset directory
holds

  song-<id>.npy     [frames, 128]: the latents of one song (a shard)
  song-<id>.audio.npy  [frames, 320] float16, optional: the song's 24 kHz
                    mono audio, the 320 samples of each latent frame per row
                    (precompute.encode --keep-audio; 48 kB per second of
                    audio, 173 MB per hour, against the latents' 69 MB)
  song-<id>.json    its source file's size and modification time, its
                    duration and the writer settings, so that a rerun can
                    reuse the song instead of encoding it again
  manifest.json     written last; the dataset is complete when it exists
                    (its fields: jingle_jax.data.manifest.Manifest)

The reader takes any shard layout the songs' shard and offset describe (a
shard may hold several songs one after another, as older datasets do).

Values are checked when written (latent_writer refuses non-finite latents
and those OUTLIER_STDS from the training mean) and when read, never all at
once: opening a dataset reads the manifest and the files' sizes only.
Training copies windows as stored (Song.read_into: one pread each, no file
kept open) and checks them in its compiled steps (jingle_jax.data.latent_space);
Song.read checks on the host, through memory maps opened as songs are read,
at most OPEN_MAPS at a time. `python -m jingle_jax.verify` reads every
value on demand.
"""

import dataclasses
import functools
import os

import numpy as np

from jingle_jax.core import limits
from jingle_jax.data import manifest
from jingle_jax.data import npy_rows
# The manifest's format, named here too for the dataset's readers.
from jingle_jax.data.manifest import (FRAME_RATE, LATENT_DIM, MANIFEST,
                                      SAMPLE_RATE, SPLITS, LatentDataError)

HOP = SAMPLE_RATE // FRAME_RATE  # audio samples per latent frame
AUDIO_SUFFIX = '.audio.npy'
AUDIO_DTYPE = 'float16'
# encodec_weights of seeded random weights: this prefix, then the seed.
RANDOM_WEIGHTS = 'random:'
# Frames checked at a time, to bound memory on large shards.
CHECK_FRAMES = 1 << 16
# Floor of the per-channel std, so that normalising never divides by zero.
MIN_STD = 1e-6
# Latents further than this many standard deviations from the training
# latents' mean are refused (e.g. float16 overflow written as 65504); each
# channel's std counts as at least 1% of the channels' mean std, so that a
# channel constant in training does not make every deviation extreme.
OUTLIER_STDS = 1000.0
# The header np.save and latent_writer write before [rows, width] values.
NPY_HEADER_BYTES = 128
# Memory maps a dataset keeps open, each with its open file: half of what
# the open-file limit leaves to the data, and at most 128, far below Linux's
# 65,530 maps per process.
OPEN_MAPS = limits.share_of_open_files(128, 0.5)


def outlier_scale(std) -> np.ndarray:
  """The per-channel unit of OUTLIER_STDS for a dataset's std."""
  std = np.asarray(std, np.float32)
  return np.maximum(std, np.float32(0.01) * np.mean(std))


def check_values(values, mean, scale, where, first_frame=0) -> None:
  """Refuses latents [frames, D] that are not finite or lie OUTLIER_STDS
  (in units of `scale`) from `mean`; the message names `where` and the
  first bad frame, counted from `first_frame`."""
  values = np.asarray(values, np.float32)
  with np.errstate(invalid='ignore'):  # inf - inf: nan, refused below
    deviation = np.abs(values - mean) / scale
  bad = ~(deviation <= OUTLIER_STDS)
  if not np.any(bad):
    return
  frame, channel = np.argwhere(bad)[0]
  value = values[frame, channel]
  where = f'{where}: frame {first_frame + frame}, channel {channel} is '
  if not np.isfinite(value):
    raise LatentDataError(f'{where}{value}, not finite')
  raise LatentDataError(
      f'{where}{value:.6g}, {deviation[frame, channel]:.3g} standard '
      f'deviations from the training latents\' mean (the bound is '
      f'{OUTLIER_STDS:g})')


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class Song:
  """One song of a dataset: its manifest.SongRecord, with the paths of its
  files, which are opened when it is read."""
  id: str
  source: str
  split: str
  duration: float
  frames: int
  shard: str  # the path of the file that holds its latents
  offset: int
  audio_path: str | None  # the path of its audio file, or None
  dataset: 'LatentDataset' = dataclasses.field(repr=False)

  @property
  def has_audio(self) -> bool:
    return self.audio_path is not None

  @property
  def latents(self) -> np.ndarray:
    """[frames, 128] read-only memory map in the manifest's dtype, values
    unchecked (read() checks them); holding it holds its file open."""
    shard = self.dataset.open_map(self.shard, self.dataset.manifest.dtype,
                                  LATENT_DIM, 'shard')
    end = self.offset + self.frames
    if end > len(shard):
      raise LatentDataError(
          f'{self.shard}: {len(shard)} frames, song {self.id!r} of '
          f'{self.dataset.manifest_path} ends at {end}')
    return shard[self.offset:end]

  @property
  def audio(self) -> np.ndarray | None:
    """[frames, HOP] float16 read-only memory map of its 24 kHz audio, or
    None. Its values are not checked: the writer refused non-finite ones,
    and a step whose loss is not finite is skipped."""
    if self.audio_path is None:
      return None
    audio = self.dataset.open_map(self.audio_path, AUDIO_DTYPE, HOP,
                                  'audio file')
    if len(audio) != self.frames:
      raise LatentDataError(f'{self.audio_path}: {len(audio)} frames of '
                            f'audio, song {self.id!r} has {self.frames}')
    return audio

  @property
  def dtype(self) -> np.dtype:
    """The stored dtype of its latents."""
    return np.dtype(self.dataset.manifest.dtype)

  def read_into(self, start: int, out: np.ndarray) -> None:
    """Copies latent frames [start, start + len(out)) as stored (unchecked)
    into `out`, a C-contiguous [n, 128] array of the stored dtype."""
    self._read_rows(self.shard, self.dtype, LATENT_DIM, 'shard',
                    self.offset + start, out)

  def read_audio_into(self, start: int, out: np.ndarray) -> None:
    """Copies the audio of frames [start, start + len(out)) into `out`, a
    C-contiguous float16 [n, HOP] array."""
    self._read_rows(self.audio_path, np.dtype(AUDIO_DTYPE), HOP,
                    'audio file', start, out)

  def _read_rows(self, path, dtype, width, what, first_row, out) -> None:
    rows = self.dataset.rows.layout(path, dtype, width, what)[1]
    if first_row + len(out) > rows:
      raise LatentDataError(f'{path}: {rows} frames, song {self.id!r} of '
                            f'{self.dataset.manifest_path} reads up to '
                            f'{first_row + len(out)}')
    self.dataset.rows.read(path, dtype, width, what, first_row, out)

  def read(self, start=0, stop=None) -> np.ndarray:
    """Latent frames [start, stop) as float32, checked (check_values): a
    bad value is a LatentDataError naming the shard, song and frame."""
    values = np.asarray(self.latents[start:stop], np.float32)
    self.dataset.check_values(values, f'{self.shard}: song {self.id!r}',
                              start)
    return values

  def check_files(self) -> None:
    """Opens its files: LatentDataError names one that is missing,
    truncated, or of another dtype, shape or length than the manifest's."""
    _ = self.latents, self.audio

  def verify(self) -> None:
    """Reads all its values, latents and audio, in bounded memory;
    LatentDataError names the first bad one."""
    audio = self.audio
    for start in range(0, self.frames, CHECK_FRAMES):
      self.read(start, start + CHECK_FRAMES)
      if audio is not None:
        finite = np.isfinite(audio[start:start + CHECK_FRAMES]).all(1)
        if not np.all(finite):
          raise LatentDataError(
              f'{self.audio_path}: song {self.id!r}: frame '
              f'{start + np.flatnonzero(~finite)[0]} holds non-finite audio')


def _open_shard(path, dtype, width=LATENT_DIM, what='shard') -> np.ndarray:
  """The [frames, width] array as a read-only memory map, its shape and
  dtype checked."""
  with npy_rows.named_errors(path, what, LatentDataError):
    shard = np.load(path, mmap_mode='r', allow_pickle=False)
  npy_rows.check_layout(path, shard.shape, not shard.flags.c_contiguous,
                        shard.dtype, width, dtype, what, LatentDataError)
  return shard


def _size_fits(path, dtype, width, rows: int, what: str) -> bool:
  """Whether the file has the size of the .npy of `rows` rows (np.save's
  and latent_writer's header); LatentDataError when it is missing."""
  with npy_rows.named_errors(path, what, LatentDataError):
    size = os.stat(path).st_size
  return size == NPY_HEADER_BYTES + rows * width * np.dtype(dtype).itemsize


class LatentDataset:
  """A finished dataset: the manifest checked, its files there and of the
  sizes it implies; values are checked as songs are read.

  `path` is the dataset directory or its manifest.json.
  """

  def __init__(self, path):
    path = os.fspath(path)
    self.manifest_path = (os.path.join(path, MANIFEST) if os.path.isdir(path)
                          else path)
    self.manifest = manifest.read(self.manifest_path)
    self.mean = np.asarray(self.manifest.mean, np.float32)
    self.std = np.asarray(self.manifest.std, np.float32)
    self._scale = outlier_scale(self.std)
    # Each dataset its own maps: a file rewritten since another dataset
    # object read it is read anew.
    self.open_map = functools.lru_cache(maxsize=OPEN_MAPS)(_open_shard)
    self.rows = npy_rows.Reader(LatentDataError)
    directory = os.path.dirname(self.manifest_path)
    self._songs = [Song(
        id=song.id, source=song.source, split=song.split,
        duration=float(song.duration), frames=song.frames,
        shard=os.path.join(directory, song.shard), offset=song.offset,
        audio_path=(os.path.join(directory, song.audio)
                    if song.audio is not None else None),
        dataset=self) for song in self.manifest.songs]
    # A file of another size than expected is opened: its header tells
    # whether it is damaged or only laid out otherwise (another header,
    # several songs).
    last = {}  # shard -> the song that ends last in it
    for song in self._songs:
      kept = last.get(song.shard)
      if kept is None or song.offset + song.frames > kept.offset + kept.frames:
        last[song.shard] = song
    dtype = self.manifest.dtype
    for song in last.values():
      if not _size_fits(song.shard, dtype, LATENT_DIM,
                        song.offset + song.frames, 'shard'):
        song.check_files()
    for song in self._songs:
      if song.has_audio and not _size_fits(song.audio_path, AUDIO_DTYPE, HOP,
                                           song.frames, 'audio file'):
        song.check_files()

  def check_values(self, values, where, first_frame=0) -> None:
    """check_values against this dataset's statistics."""
    check_values(values, self.mean, self._scale, where, first_frame)

  @property
  def has_audio(self) -> bool:
    """Whether every song has its audio (precompute.encode --keep-audio)."""
    return all(song.has_audio for song in self._songs)

  def songs(self, split: str) -> list[Song]:
    """The songs of `split`, in manifest order."""
    if split not in SPLITS:
      raise LatentDataError(f'{self.manifest_path}: unknown split {split!r}, '
                            f'splits are {SPLITS}')
    return [song for song in self._songs if song.split == split]
