"""The server's temporary folder: one per process under a shared root.

The folder holds a file locked (flock) for the process's life. The kernel
drops the lock however the process ends, so a folder whose lock can be
taken belongs to no live server: each start removes those, and a server
removes its own on exit.
"""

import fcntl
import os
import shutil
import tempfile
import time

from absl import logging

PREFIX = 'server-'
LOCK_FILE = 'lock'
# A folder without its lock file is a server's in its first instant, or
# one that died then: removed once older than this.
UNLOCKED_GRACE_S = 60


def _abandoned(path) -> bool:
  try:
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
  except FileNotFoundError:
    return time.time() - os.path.getmtime(path) > UNLOCKED_GRACE_S
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  finally:
    os.close(fd)


def remove_abandoned(root) -> list[str]:
  """Removes the folders under root of servers that are gone; returns them."""
  removed = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if name.startswith(PREFIX) and os.path.isdir(path) and _abandoned(path):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  if removed:
    logging.info('removed %d folders of servers that ended: %s',
                 len(removed), ', '.join(removed))
  return removed


class Scratch:
  """This process's folder under root, locked until close()."""

  def __init__(self, root):
    os.makedirs(root, exist_ok=True)
    remove_abandoned(root)
    self.path = tempfile.mkdtemp(prefix=PREFIX, dir=root)
    # Locked under another name, then renamed: no one sees it unlocked.
    unlocked = os.path.join(self.path, LOCK_FILE + '.new')
    self._lock = os.open(unlocked, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
    fcntl.flock(self._lock, fcntl.LOCK_EX)
    os.rename(unlocked, os.path.join(self.path, LOCK_FILE))

  def folder(self, name: str) -> str:
    """A subfolder, made if missing."""
    path = os.path.join(self.path, name)
    os.makedirs(path, exist_ok=True)
    return path

  def close(self) -> None:
    if self._lock is not None:
      shutil.rmtree(self.path, ignore_errors=True)
      os.close(self._lock)
      self._lock = None
