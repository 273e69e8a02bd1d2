"""One writer per workdir: training (or convert_torch) holds WORKDIR/train.lock
while it runs.

The lock is the kernel's (flock) on the open file, not the file's existence:
it goes with the process that holds it, however that process ends, so a
killed run leaves a file that blocks nothing. On a filesystem shared by
several hosts the same holds where it supports flock (NFS emulates it with
its own locks, which the server drops when a crashed client's lease ends).
The file names the holder (host, pid, start) for the message only. Only
process 0 of a multi-process run writes, so only it locks; the others learn
the outcome from it.
"""

import datetime
import fcntl
import json
import os
import socket

from absl import logging
import jax

from jingle_jax.core import parallel

LOCK_FILE = 'train.lock'


class WorkdirInUse(ValueError):
  """Another run writes to the workdir."""


def _holder(fd) -> str:
  try:
    record = json.loads(os.pread(fd, 4096, 0).decode())
    return (f'host {record["host"]}, pid {record["pid"]}, since '
            f'{record["since"]}')
  except (ValueError, KeyError, TypeError):
    return 'a process that has not said who it is yet'


def _try_lock(workdir) -> tuple[int | None, str | None]:
  """(the locked file's descriptor, None), or (None, why not)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    return None, (f'{workdir} is being written by another run ({holder}; '
                  f'{path}): wait for it to end, or use another --workdir')
  except OSError as e:  # a filesystem without flock
    logging.warning('%s: cannot lock (%s); a second run on this workdir '
                    'would not be refused', path, e)
    return fd, None
  since = datetime.datetime.now(datetime.timezone.utc)
  record = json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),
                       'since': since.strftime('%Y-%m-%d %H:%M:%S UTC')})
  os.ftruncate(fd, 0)
  os.pwrite(fd, record.encode() + b'\n', 0)
  return fd, None


def acquire(workdir) -> int | None:
  """Locks `workdir` for this run (process 0); WorkdirInUse names the holder
  when another run has it. Returns what release() takes."""
  fd, refusal = _try_lock(workdir) if jax.process_index() == 0 else (None,
                                                                     None)
  if parallel.process_0_says(refusal is not None) and refusal is None:
    refusal = f'{workdir} is being written by another run (process 0 says)'
  if refusal is not None:
    raise WorkdirInUse(refusal)
  return fd


def release(fd: int | None) -> None:
  """Unlocks; the file stays, naming the last holder."""
  if fd is not None:
    os.close(fd)
