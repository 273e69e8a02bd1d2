"""The songs a person can arrange: uploads, checked and measured as they
arrive, and the files of a music folder. The client's names are shown,
never used as paths: a song is a random token, and an upload is stored as
TOKEN.SUFFIX with a suffix the audio reader knows."""

import dataclasses
import os
import secrets
import threading
import time

from absl import logging
import soundfile

from jingle_jax.data import audio
from jingle_jax.data import latents

_CHUNK = 1 << 20
_MAX_NAME = 120  # characters of a client's name kept for display


class RequestError(Exception):
  """A request that cannot be served: its HTTP status and the message."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass(frozen=True)
class Song:
  token: str
  name: str  # what the person knows it by; display only
  seconds: float
  path: str
  uploaded: bool
  added: float  # time.monotonic()

  def summary(self) -> dict:
    return {'id': self.token, 'name': self.name,
            'seconds': round(self.seconds, 3)}


def past_keeping(items, since, max_age_s, max_count) -> list:
  """The items to forget: those older than max_age_s (`since(item)`, a
  time.monotonic() time), then the oldest beyond max_count."""
  now = time.monotonic()
  items = sorted(items, key=since)
  old = [item for item in items if now - since(item) > max_age_s]
  kept = [item for item in items if now - since(item) <= max_age_s]
  return old + kept[:max(0, len(kept) - max_count)]


def named(error, path, name) -> str:
  """An error's text with the stored file's path replaced by its name."""
  return str(error).replace(path, name).strip(' .')


def _display_name(name) -> str:
  name = os.path.basename(str(name or '').replace('\\', '/')) or 'song'
  return name[:_MAX_NAME]


class Songs:
  """Uploaded songs (at most max_uploads, each for max_age_s) and a
  music folder's songs, by token."""

  def __init__(self, folder, *, clip_seconds, max_bytes, max_seconds,
               max_uploads=64, max_age_s=3600.0, music_dir=None):
    self.folder = folder
    self.clip_seconds = clip_seconds
    self.max_bytes, self.max_seconds = max_bytes, max_seconds
    self.max_uploads, self.max_age_s = max_uploads, max_age_s
    self._songs: dict[str, Song] = {}
    self._lock = threading.Lock()
    self.music = _music_songs(music_dir) if music_dir else []
    self._songs.update((song.token, song) for song in self.music)

  def get(self, token) -> Song:
    with self._lock:
      song = self._songs.get(str(token))
    if song is None:
      raise RequestError(404, f'no song {str(token)[:40]!r}: upload it '
                         'again (uploads are kept for '
                         f'{self.max_age_s / 60:g} minutes)')
    return song

  def upload(self, source, client_name) -> Song:
    """Stores and checks an upload (a binary file object)."""
    name = _display_name(client_name)
    suffix = os.path.splitext(name)[1].lower()
    readable = audio.readable_suffixes()
    if suffix not in readable:
      raise RequestError(415, f'{name}: not a kind of audio file this '
                         f'server reads ({", ".join(sorted(readable))})')
    token = secrets.token_hex(8)
    path = os.path.join(self.folder, token + suffix)
    try:
      self._store(source, path, name)
      seconds = self._measure(path, name)
    except BaseException:
      if os.path.exists(path):
        os.remove(path)
      raise
    song = Song(token, name, seconds, path, True, time.monotonic())
    with self._lock:
      self._songs[token] = song
    self.prune()
    return song

  def _store(self, source, path, name) -> None:
    size = 0
    with open(path, 'wb') as out:
      while chunk := source.read(_CHUNK):
        size += len(chunk)
        if size > self.max_bytes:
          raise RequestError(413, f'{name}: larger than this server\'s '
                             f'limit of {self.max_bytes / 2**20:g} MB')
        out.write(chunk)
    if size == 0:
      raise RequestError(422, f'{name}: empty file (0 bytes)')

  def _measure(self, path, name) -> float:
    """Seconds of audio, read to the end as arranging will read it."""
    try:
      header = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
      raise RequestError(422, f'{name}: not readable audio '
                         f'({named(e, path, name)})') from None
    if header.duration > self.max_seconds:
      raise RequestError(413, f'{name}: {header.duration / 60:.1f} minutes, '
                         f'longer than this server\'s limit of '
                         f'{self.max_seconds / 60:g}')
    try:
      stream = audio.MonoStream(path)
      for _ in stream:
        pass
    except audio.BadAudio as e:
      raise RequestError(422, f'{name}: {named(e, path, name)}') from None
    except (OSError, RuntimeError, soundfile.LibsndfileError) as e:
      raise RequestError(422, f'{name}: cannot be read to its end '
                         f'({named(e, path, name)})') from None
    seconds = stream.samples / latents.SAMPLE_RATE
    if seconds < self.clip_seconds:
      raise RequestError(422, f'{name}: {seconds:.2f} s of audio; the '
                         f'model\'s clips are {self.clip_seconds:g} s')
    return seconds

  def prune(self) -> None:
    """Forgets and deletes uploads past their age, then the oldest ones
    beyond max_uploads."""
    with self._lock:
      expired = past_keeping(
          [song for song in self._songs.values() if song.uploaded],
          lambda song: song.added, self.max_age_s, self.max_uploads)
      for song in expired:
        del self._songs[song.token]
    for song in expired:
      if os.path.exists(song.path):
        os.remove(song.path)


def _music_songs(music_dir) -> list[Song]:
  """The readable audio files under music_dir, by name; lengths from their
  headers."""
  songs = []
  for folder, _, names in sorted(os.walk(music_dir)):
    for name in sorted(names):
      path = os.path.join(folder, name)
      if os.path.splitext(name)[1].lower() not in audio.readable_suffixes():
        continue
      try:
        seconds = soundfile.info(path).duration
      except (soundfile.LibsndfileError, RuntimeError) as e:
        logging.warning('--music: %s skipped: %s', path, e)
        continue
      songs.append(Song('m' + secrets.token_hex(6),
                        os.path.relpath(path, music_dir), seconds, path,
                        False, time.monotonic()))
  if not songs:
    logging.warning('--music %s: no audio file this server reads', music_dir)
  return songs
