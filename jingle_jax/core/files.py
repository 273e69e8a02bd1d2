"""Files written whole or not at all: a temporary file, then a rename.

A writer holds a lock (flock) on its temporary file while it writes, so that
remove_abandoned_temporaries tells the files of killed writers from those
of live ones: the kernel drops the lock with the process that held it.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil

# atomic_write's temporary files: .NAME.HEX.tmp
_TEMPORARY = re.compile(r'\..+\.[0-9a-f]{8}\.tmp')
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
  """A write that found its filesystem full; the message names the folder,
  what was written and the space left."""


def megabytes(size: int) -> str:
  return f'{size / 1e6:.1f} MB'


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or one it was raised from, is a full filesystem's
  (an OSError, or a library's error that quotes one)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _FULL:
      return True
    if any(os.strerror(code) in str(error) for code in _FULL):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full(folder, writing: str, needed: int | None = None) -> DiskFull:
  """The DiskFull error of `folder`'s filesystem, found `writing`."""
  folder = os.path.abspath(folder)
  free = shutil.disk_usage(folder).free
  wanted = '' if needed is None else f' of the {megabytes(needed)} needed'
  return DiskFull(f'{folder}: no space left on its filesystem writing '
                  f'{writing} ({megabytes(free)} free{wanted}); free space '
                  'and rerun: what was written before stays')


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
    fcntl.flock(fd, fcntl.LOCK_EX)
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    if is_disk_full(e) and not isinstance(e, DiskFull):
      raise disk_full(os.path.dirname(path) or '.',
                      os.path.basename(path)) from None
    raise


def remove_abandoned_temporaries(folder) -> list[str]:
  """Removes the temporary files that killed atomic_writes left in
  `folder` (none that a live writer holds); returns their names."""
  removed = []
  for name in sorted(os.listdir(folder)):
    if not _TEMPORARY.fullmatch(name):
      continue
    path = os.path.join(folder, name)
    try:
      fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # finished meanwhile
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # its writer is alive
      continue
    else:
      os.remove(path)
      removed.append(name)
    finally:
      os.close(fd)
  return removed


def write_text(path, text: str) -> None:
  """Writes `text` to `path` (its directory made if needed), atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_write(path, 'w') as f:
    f.write(text)


def write_json(path, value) -> None:
  """`value` as indented JSON, atomically."""
  write_text(path, json.dumps(value, indent=1) + '\n')


def read_json(path, error, what: str, missing: str):
  """The JSON value of `path`; else error(message) naming the file: `what`
  is missing (`missing` says why that may be) or cannot be read."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise error(f'{path}: no {what}{missing}') from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise error(f'{path}: unreadable {what}: {e}') from None
