"""Writing a latent dataset (jingle_jax.data.latents): one song's shard (and
maybe its audio) at a time as they arrive, then the manifest; every file
atomically. numpy and absl only."""

import contextlib
import io
import json
import os

from absl import logging
import numpy as np

from jingle_jax.core import files
from jingle_jax.data import latents
from jingle_jax.data import manifest


def written_encoder(out_dir):
  """(encoder, song file) of a song already in out_dir, or None: a dataset
  keeps one encoder, so one song tells (not 200,000 files read)."""
  with contextlib.suppress(FileNotFoundError):
    with os.scandir(out_dir) as entries:
      for entry in entries:
        if entry.name.startswith('song-') and entry.name.endswith('.json'):
          with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(entry.path) as f:
              settings = json.load(f).get('settings', {})
            return settings.get('encoder', 'torch'), entry.name
  return None


class DatasetWriter:
  """Writes song shards, then the manifest; every file atomically.

  Opening a writer removes the directory's manifest, so the dataset reads as
  unfinished until finish() writes the new one.
  """

  def __init__(self, out_dir, *, encodec_weights: str, dtype='float16',
               bandwidth=6.0, keep_audio=False, encoder='torch'):
    """keep_audio: also write each song's 24 kHz mono audio, float16
    [frames, 320] (the samples of each latent frame) in song-<id>.audio.npy.
    encoder: which of manifest.ENCODERS encodes the songs.
    """
    if dtype not in manifest.DTYPES:
      raise ValueError(f'dtype {dtype!r} is not one of {manifest.DTYPES}')
    self.out_dir = os.fspath(out_dir)
    self.settings = {'format_version': manifest.FORMAT_VERSION,
                     'encodec_weights': encodec_weights, 'dtype': dtype,
                     'bandwidth': float(bandwidth)}
    if encoder not in manifest.ENCODERS:
      raise ValueError(f'encoder {encoder!r} is not one of '
                       f'{manifest.ENCODERS}')
    if encoder != 'torch':
      # Only then a setting: songs written before the choice stay cached.
      self.settings['encoder'] = encoder
    # (file suffix, row width, dtype) of each array a song has.
    self.arrays = [('.npy', latents.LATENT_DIM, np.dtype(dtype))]
    if keep_audio:
      # Only then a setting: songs written before audio existed stay cached.
      self.settings['audio_dtype'] = latents.AUDIO_DTYPE
      self.arrays.append((latents.AUDIO_SUFFIX, latents.HOP,
                          np.dtype(latents.AUDIO_DTYPE)))
    os.makedirs(self.out_dir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(self.out_dir, latents.MANIFEST))
    removed = files.remove_abandoned_temporaries(self.out_dir)
    if removed:
      logging.info('%s: removed %d files that killed runs left unfinished',
                   self.out_dir, len(removed))

  @property
  def encoder(self) -> str:
    return self.settings.get('encoder', 'torch')

  @property
  def keeps_audio(self) -> bool:
    return len(self.arrays) > 1

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
      arrays = [np.load(self._path(song_id, suffix), mmap_mode='r')
                for suffix, _, _ in self.arrays]
    except (OSError, ValueError):
      return None
    expected = {'settings': self.settings, 'source': source,
                'fingerprint': fingerprint}
    if (not isinstance(written, dict) or
        any(written.get(key) != value for key, value in expected.items())
        or any(array.shape != (written.get('frames'), width)
               or array.dtype != dtype
               for array, (_, width, dtype) in zip(arrays, self.arrays))):
      return None
    return self.record(song_id, source, written['duration'],
                       written['frames'], written.get('header_seconds'))

  def record(self, song_id: str, source: str, duration, frames,
             header_seconds=None) -> dict:
    """A song's record {id, source, duration, frames[, audio]
    [, header_seconds]}."""
    record = {'id': song_id, 'source': source, 'duration': duration,
              'frames': frames}
    if header_seconds is not None:
      record['header_seconds'] = header_seconds
    if self.keeps_audio:
      record['audio'] = os.path.basename(
          self._path(song_id, latents.AUDIO_SUFFIX))
    return record

  def song(self, song_id: str, source: str, fingerprint=None) -> 'SongWriter':
    """A context in which to write one song's latents, block by block."""
    return SongWriter(self, song_id, source, fingerprint)

  def _blocks(self, song):
    """(first frame, frames) of a written song's latents, CHECK_FRAMES at
    a time."""
    shard = np.load(self._path(song['id'], '.npy'), mmap_mode='r')
    for start in range(0, len(shard), latents.CHECK_FRAMES):
      yield start, shard[start:start + latents.CHECK_FRAMES]

  def _statistics(self, songs):
    """Per-channel mean and std of every training frame, as the manifest
    stores them (float32), in one pass over all songs that also refuses
    latents OUTLIER_STDS from that mean: the second look, at the songs
    only, happens when a value is out of bounds, to name it."""
    total = np.zeros(latents.LATENT_DIM)
    total_squares = np.zeros(latents.LATENT_DIM)
    count = 0
    low = np.full(latents.LATENT_DIM, np.inf, np.float32)
    high = -low
    for song in songs:
      for _, frames in self._blocks(song):
        low = np.minimum(low, frames.min(0))
        high = np.maximum(high, frames.max(0))
        if song['split'] == 'train':
          frames = frames.astype(np.float64)
          total += frames.sum(0)
          total_squares += np.square(frames).sum(0)
          count += len(frames)
    if not count:
      raise ValueError(f'{self.out_dir}: no training songs to compute the '
                       'latent statistics from')
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0))
    mean, std = (x.astype(np.float32)
                 for x in (mean, np.maximum(std, latents.MIN_STD)))
    # The deviation grows with |value - mean|: the extremes bound it.
    scale = latents.outlier_scale(std)
    if np.any(np.maximum(high - mean, mean - low) / scale >
              latents.OUTLIER_STDS):
      for song in songs:
        for start, frames in self._blocks(song):
          latents.check_values(
              frames, mean, scale,
              f'{self._path(song["id"], ".npy")}: song {song["id"]!r}', start)
    return mean, std

  def finish(self, songs: list[dict], skipped: list[dict],
             min_seconds=None, decoder=None) -> manifest.Manifest:
    """Writes manifest.json and returns it.

    songs: the written songs' records with their split, in manifest order;
    skipped: [{source, reason}]; min_seconds: the shortest song kept;
    decoder: the name of the decoder weights file written beside it.
    """
    ids = [song['id'] for song in songs]
    if len(set(ids)) != len(ids):
      raise ValueError(f'{self.out_dir}: song ids are not unique')
    mean, std = self._statistics(songs)
    written = manifest.Manifest(
        encodec_weights=self.settings['encodec_weights'],
        dtype=self.settings['dtype'],
        songs=tuple(manifest.SongRecord(
            id=song['id'], source=song['source'], split=song['split'],
            duration=song['duration'], frames=song['frames'],
            shard=os.path.basename(self._path(song['id'], '.npy')),
            audio=song.get('audio'),
            header_seconds=song.get('header_seconds')) for song in songs),
        mean=tuple(float(x) for x in mean), std=tuple(float(x) for x in std),
        skipped=tuple(manifest.SkippedFile(**file) for file in skipped),
        bandwidth=self.settings['bandwidth'], min_seconds=min_seconds,
        decoder=decoder, encoder=self.encoder)
    written.write(os.path.join(self.out_dir, latents.MANIFEST))
    return written


class _Rows:
  """One [rows, width] .npy written row block by row block (atomically).

  The header, written last, is the same size for any row count.
  """


  def __init__(self, stack, path, width: int, dtype, what: str):
    self.width, self.dtype, self.what = width, dtype, what
    self.rows = 0
    self._file = stack.enter_context(files.atomic_write(path))
    self._file.seek(latents.NPY_HEADER_BYTES)

  def append(self, values) -> None:
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != self.width:
      raise ValueError(f'{self.what} of shape {values.shape}, expected '
                       f'[frames, {self.width}]')
    with np.errstate(over='ignore'):  # overflow is reported just below
      stored = values.astype(self.dtype)
    if not np.all(np.isfinite(stored)):
      raise ValueError(f'{self.what} hold non-finite values as {self.dtype}')
    self._file.write(np.ascontiguousarray(stored).tobytes())
    self.rows += len(stored)

  def finish(self) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        'descr': np.lib.format.dtype_to_descr(self.dtype),
        'fortran_order': False, 'shape': (self.rows, self.width)})
    if header.tell() != latents.NPY_HEADER_BYTES:
      raise RuntimeError(f'.npy header of {header.tell()} bytes')
    self._file.seek(0)
    self._file.write(header.getvalue())


class SongWriter:
  """One song's shard (and audio), written as they arrive (bounded memory).

    with writer.song(song_id, source, fingerprint) as song:
      for samples, latents in blocks:
        song.append_audio(samples)  # when the writer keeps audio
        song.append(latents)
      record = song.commit(duration)

  Nothing is kept unless commit() ran and the block ended without an
  exception; the .json that vouches for the arrays is written last.
  """

  def __init__(self, writer: DatasetWriter, song_id, source, fingerprint):
    self._writer, self._id = writer, song_id
    self._json = writer._path(song_id, '.json')
    self._source, self._fingerprint = source, fingerprint
    self._pending_audio = np.zeros(0, np.float32)
    self._record = None
    self._stack = contextlib.ExitStack()

  def __enter__(self):
    # The old record goes first: a run killed before the new record is
    # written must not find a record that vouches for the new data.
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._json)
    with contextlib.suppress(FileNotFoundError):  # of a run that kept audio
      os.remove(self._writer._path(self._id, latents.AUDIO_SUFFIX))
    self._arrays = [
        _Rows(self._stack, self._writer._path(self._id, suffix), width,
              dtype, f'song {self._id!r}: ' + ('latents' if index == 0
                                                else 'audio samples'))
        for index, (suffix, width, dtype) in enumerate(self._writer.arrays)]
    return self

  def append(self, values) -> None:
    """Appends latents [frames, 128], stored in the dataset's dtype."""
    self._arrays[0].append(values)

  def append_audio(self, samples) -> None:
    """Appends mono 24 kHz samples; those after the last whole frame are
    dropped at commit, as the encoder drops them."""
    if not self._writer.keeps_audio:
      raise ValueError(f'song {self._id!r}: the writer keeps no audio')
    pending = np.concatenate([self._pending_audio, np.ravel(samples)])
    whole = len(pending) // latents.HOP * latents.HOP
    self._arrays[1].append(pending[:whole].reshape(-1, latents.HOP))
    self._pending_audio = pending[whole:]

  def commit(self, duration: float, header_seconds=None) -> dict:
    """Completes the song of `duration` seconds of audio (its file's
    header said `header_seconds` when it was cut short); its record."""
    frames = self._arrays[0].rows
    if not frames:
      raise ValueError(f'song {self._id!r}: no latent frames')
    for array in self._arrays[1:]:
      if array.rows != frames:
        raise ValueError(f'song {self._id!r}: {array.rows} frames of audio, '
                         f'{frames} of latents')
    for array in self._arrays:
      array.finish()
    self._record = self._writer.record(self._id, self._source,
                                       float(duration), frames,
                                       header_seconds)
    return dict(self._record)

  def __exit__(self, exc_type, exc, traceback):
    if exc_type is not None or self._record is None:
      # atomic_write, seeing an exception, removes the unfinished arrays.
      error = exc or ValueError(f'song {self._id!r}: left without commit()')
      self._stack.__exit__(type(error), error, traceback)
      if exc is None:
        raise error
      return False
    self._stack.__exit__(None, None, None)  # the arrays take their places
    files.write_json(self._json, {
        'settings': self._writer.settings, 'source': self._source,
        'fingerprint': self._fingerprint,
        **{key: self._record[key] for key in ('duration', 'frames',
                                              'header_seconds')
           if key in self._record}})
    return False
