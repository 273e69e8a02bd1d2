"""Files written whole or not at all: a temporary file, then a rename."""

import contextlib
import json
import os
import secrets


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
