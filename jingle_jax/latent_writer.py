"""Writing a latent dataset (jingle_jax.latents): one song's shard at a
time as its latents arrive, then the manifest; every file atomically. numpy
only."""

import contextlib
import io
import json
import os

import numpy as np

from jingle_jax import files
from jingle_jax import latents


class DatasetWriter:
  """Writes song shards, then the manifest; every file atomically.

  Opening a writer removes the directory's manifest, so the dataset reads as
  unfinished until finish() writes the new one.
  """

  def __init__(self, out_dir, *, encodec_weights: str, dtype='float16',
               bandwidth=6.0):
    if dtype not in latents.DTYPES:
      raise ValueError(f'dtype {dtype!r} is not one of {latents.DTYPES}')
    self.out_dir = os.fspath(out_dir)
    self.settings = {'format_version': latents.FORMAT_VERSION,
                     'encodec_weights': encodec_weights, 'dtype': dtype,
                     'bandwidth': float(bandwidth)}
    os.makedirs(self.out_dir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(self.out_dir, latents.MANIFEST))

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
        or shard.shape != (written.get('frames'), latents.LATENT_DIM)
        or shard.dtype != np.dtype(self.settings['dtype'])):
      return None
    return {'id': song_id, 'source': source,
            'duration': written['duration'], 'frames': written['frames']}

  def song(self, song_id: str, source: str, fingerprint=None) -> 'SongWriter':
    """A context in which to write one song's latents, block by block."""
    return SongWriter(self, song_id, source, fingerprint)

  def _train_statistics(self, songs):
    """Per-channel mean and std over every training frame (float64)."""
    total = np.zeros(latents.LATENT_DIM)
    total_squares = np.zeros(latents.LATENT_DIM)
    count = 0
    for song in songs:
      if song['split'] != 'train':
        continue
      shard = np.load(self._path(song['id'], '.npy'), mmap_mode='r')
      for start in range(0, len(shard), latents.CHECK_FRAMES):
        frames = shard[start:start + latents.CHECK_FRAMES].astype(
            np.float64)
        total += frames.sum(0)
        total_squares += np.square(frames).sum(0)
      count += len(shard)
    if not count:
      raise ValueError(f'{self.out_dir}: no training songs to compute the '
                       'latent statistics from')
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0))
    return mean, np.maximum(std, latents.MIN_STD)

  def finish(self, songs: list[dict], skipped: list[dict],
             min_seconds=None, decoder=None) -> dict:
    """Writes manifest.json and returns it.

    songs: the written songs' records with their split, in manifest order;
    skipped: [{source, reason}]; min_seconds: the shortest song kept;
    decoder: the name of the decoder weights file written beside it.
    """
    ids = [song['id'] for song in songs]
    if len(set(ids)) != len(ids):
      raise ValueError(f'{self.out_dir}: song ids are not unique')
    mean, std = self._train_statistics(songs)
    manifest = {
        'format_version': latents.FORMAT_VERSION,
        'encodec_weights': self.settings['encodec_weights'],
        'bandwidth': self.settings['bandwidth'],
        'sample_rate': latents.SAMPLE_RATE,
        'frame_rate': latents.FRAME_RATE,
        'latent_dim': latents.LATENT_DIM,
        'dtype': self.settings['dtype'],
        'min_seconds': min_seconds,
        'decoder': decoder,
        'songs': [{'id': song['id'], 'source': song['source'],
                   'split': song['split'], 'duration': song['duration'],
                   'frames': song['frames'],
                   'shard': os.path.basename(self._path(song['id'], '.npy')),
                   'offset': 0} for song in songs],
        'mean': [float(x) for x in mean.astype(np.float32)],
        'std': [float(x) for x in std.astype(np.float32)],
        'skipped': list(skipped),
    }
    files.write_json(os.path.join(self.out_dir, latents.MANIFEST), manifest)
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
    self._file = self._stack.enter_context(files.atomic_write(self._npy))
    self._file.seek(self._HEADER_BYTES)
    return self

  def append(self, values) -> None:
    """Appends latents [frames, 128], stored in the dataset's dtype."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != latents.LATENT_DIM:
      raise ValueError(f'song {self._id!r}: latents of shape {values.shape}, '
                       f'expected [frames, {latents.LATENT_DIM}]')
    with np.errstate(over='ignore'):  # overflow is reported just below
      stored = values.astype(self._dtype)
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
        'fortran_order': False,
        'shape': (self._frames, latents.LATENT_DIM)})
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
    files.write_json(self._json, {
        'settings': self._settings, 'source': self._source,
        'fingerprint': self._fingerprint,
        'duration': self._record['duration'],
        'frames': self._record['frames']})
    return False
