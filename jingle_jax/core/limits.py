"""Limits read from the system rather than assumed."""

import functools
import resource

# Files a training process opens besides its datasets' (libraries, logs,
# checkpoints, the compilation cache, TensorBoard): a CPU run peaked at 30
# open files with its 16 readers (docs/BENCHMARKS.md); this leaves room.
OTHER_OPEN_FILES = 32


@functools.cache
def open_files_allowed() -> int:
  """This process's open-file limit (RLIMIT_NOFILE's soft limit)."""
  soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
  return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def share_of_open_files(most: int, share: float) -> int:
  """`share` of the files the limit leaves to the data, at most `most`
  and at least 1."""
  spare = open_files_allowed() - OTHER_OPEN_FILES
  return max(1, min(most, int(spare * share)))
