"""A folder on a small filesystem, to fill."""

import contextlib
import subprocess


@contextlib.contextmanager
def small_filesystem(path, size: str):
  """`path` on a tmpfs of `size`, or None where none can be mounted."""
  path.mkdir()
  try:
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                              'tmpfs', str(path)], capture_output=True,
                             check=False).returncode == 0
  except OSError:  # no mount command
    mounted = False
  try:
    yield path if mounted else None
  finally:
    if mounted:
      subprocess.run(['umount', '-l', str(path)], check=False)
