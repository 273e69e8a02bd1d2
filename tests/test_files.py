"""Files written whole: temporary files of killed writers, full disks."""

import errno
import os
import subprocess
import sys

import pytest

from jingle_jax.core import files

# Writes REPO/.x.HEX.tmp through atomic_write, says so, and waits to be
# killed: a writer killed mid-file.
KILLED_WRITER = """
import sys, time
from jingle_jax.core import files
with files.atomic_write(sys.argv[1]) as f:
  f.write(b'partial')
  f.flush()
  print('writing', flush=True)
  time.sleep(600)
"""


def test_only_the_temporary_files_of_dead_writers_are_removed(tmp_path):
  killed = subprocess.Popen([sys.executable, '-c', KILLED_WRITER,
                             str(tmp_path / 'killed.npy')],
                            stdout=subprocess.PIPE, text=True)
  assert killed.stdout.readline() == 'writing\n'
  killed.kill()
  killed.wait()
  with files.atomic_write(tmp_path / 'live.npy') as live:
    live.write(b'in progress')
    (tmp_path / 'notes.tmp').write_text('not a temporary file of ours')
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 3  # killed's and live's temporary files, notes
    removed = files.remove_abandoned_temporaries(tmp_path)
    assert removed == [
        name for name in left if name.startswith('.killed.npy.')]
    assert len(removed) == 1
  assert sorted(os.listdir(tmp_path)) == ['live.npy', 'notes.tmp']
  assert (tmp_path / 'live.npy').read_bytes() == b'in progress'


def test_a_full_disk_names_the_folder_and_keeps_the_old_file(tmp_path,
                                                             monkeypatch):
  (tmp_path / 'data.json').write_text('old')

  def full(fd):
    del fd
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, 'fsync', full)
  with pytest.raises(files.DiskFull) as error:
    files.write_json(tmp_path / 'data.json', {'new': 1})
  assert str(error.value).startswith(
      f'{tmp_path}: no space left on its filesystem writing data.json (')
  assert (tmp_path / 'data.json').read_text() == 'old'
  assert os.listdir(tmp_path) == ['data.json']


def test_errors_that_quote_a_full_disk_are_told_apart():
  assert files.is_disk_full(OSError(errno.EDQUOT, 'quota'))
  try:
    try:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:
      raise RuntimeError('the save failed') from e
  except RuntimeError as e:
    assert files.is_disk_full(e)
  assert files.is_disk_full(ValueError(
      'RESOURCE_EXHAUSTED: Error writing file: No space left on device'))
  assert not files.is_disk_full(OSError(errno.ENOENT, 'missing'))
