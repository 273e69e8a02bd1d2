"""Rows of 2-D .npy files, each read with one pread.

No file stays open between reads, and pread runs without the GIL, so that
threads read in parallel: from a cold page cache, several reads in flight
keep a disk busy that one reader leaves idle (docs/BENCHMARKS.md). A file's
header is read once and remembered (LAYOUTS_KEPT files at most).
"""

import contextlib
import functools
import os
import threading

import numpy as np

# Files whose layout (where the values start, how many rows) a Reader keeps.
LAYOUTS_KEPT = 1 << 16
# numpy parses a header with ast.literal_eval, which CPython 3.11 and 3.12
# cannot run in two threads at once ("SystemError: AST constructor recursion
# depth mismatch", CPython issue 106905): the readers parse one at a time.
_HEADER_PARSING = threading.Lock()


def check_layout(path, shape, fortran_order, dtype, width, expected_dtype,
                 what, error) -> None:
  """`error` naming the file unless it holds [rows, width] of
  expected_dtype in C order."""
  if len(shape) != 2 or shape[1] != width or fortran_order:
    raise error(f'{path}: shape {shape}, expected [frames, {width}]')
  if dtype != np.dtype(expected_dtype):
    raise error(f'{path}: dtype {dtype}, expected {expected_dtype}')


@contextlib.contextmanager
def named_errors(path, what: str, error):
  """Errors of opening or parsing the file as `error`s naming it."""
  try:
    yield
  except FileNotFoundError:
    raise error(f'{path}: {what} is missing') from None
  except ValueError as e:
    raise error(f'{path}: unreadable or truncated {what}: {e}') from None
  except OSError as e:  # e.g. the open-file limit: not the file's fault
    raise error(f'{path}: cannot open the {what}: {e}') from None


def _layout(path, dtype, width, what, error) -> tuple[int, int]:
  """(byte offset of the values, rows) of the file, its header checked."""
  with named_errors(path, what, error), open(path, 'rb') as f:
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    with _HEADER_PARSING:
      shape, fortran_order, stored_dtype = read_header(f)
    offset, size = f.tell(), os.fstat(f.fileno()).st_size
  check_layout(path, shape, fortran_order, stored_dtype, width, dtype, what,
               error)
  if size < offset + shape[0] * width * stored_dtype.itemsize:
    raise error(f'{path}: unreadable or truncated {what}: {size} bytes hold '
                f'fewer than {shape[0]} rows')
  return offset, shape[0]


class Reader:
  """Reads rows of .npy files [rows, width]; `error` is the exception (a
  message naming the file) for a file that cannot be read."""

  def __init__(self, error: type[Exception]):
    self.error = error
    self.layout = functools.lru_cache(maxsize=LAYOUTS_KEPT)(
        functools.partial(_layout, error=error))

  def read(self, path, dtype, width, what, first_row: int,
           out: np.ndarray) -> None:
    """Rows [first_row, first_row + len(out)) into `out`, a C-contiguous
    array [n, width] of `dtype`."""
    offset, rows = self.layout(path, dtype, width, what)
    if first_row + len(out) > rows:
      raise self.error(f'{path}: {rows} rows, {first_row + len(out)} read')
    with named_errors(path, what, self.error):
      fd = os.open(path, os.O_RDONLY)
    try:
      read = os.preadv(fd, [memoryview(out).cast('B')],
                       offset + first_row * width * out.itemsize)
    finally:
      os.close(fd)
    if read != out.nbytes:
      raise self.error(f'{path}: {what} truncated since it was opened')
