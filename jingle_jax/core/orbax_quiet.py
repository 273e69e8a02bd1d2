"""Keeps Orbax's chatter out of the commands' output.

Orbax logs every save and restore through absl at INFO, and warns of things
that are so here (e.g. a read-only manager); absl has one logger for every
library, so its records are told apart by the file that logs them. The reads
that a failed restore abandons print pages when they end or are collected. What
goes wrong with a checkpoint, jingle_jax.training.checkpoints reports in one
line. Imports no Orbax: commands that never load it stay light.
"""

import contextlib
import gc
import io
import logging as python_logging
import sys
import time

from absl import logging

# How long a failed restore's abandoned reads are given to end quietly.
_SETTLE_SECONDS = 0.5


def _from_orbax(path: str) -> bool:
  return '/orbax/' in path


def keeps(record) -> bool:
  """Whether a log record is shown: Orbax's below ERROR are not, nor the
  event loop's report of an abandoned read."""
  if record.name == 'asyncio':
    return 'exception was never retrieved' not in record.getMessage()
  return (record.levelno >= python_logging.ERROR or
          not _from_orbax(record.pathname))


def _abandoned_read(unraisable) -> bool:
  code = getattr(unraisable.object, 'cr_code', None)
  return code is not None and _from_orbax(code.co_filename)


def install() -> None:
  """Filters absl's handler and hides abandoned Orbax reads' reports."""
  logging.get_absl_handler().addFilter(keeps)
  hook = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: (
      None if _abandoned_read(unraisable) else hook(unraisable))


@contextlib.contextmanager
def failed_reads_held():
  """Keeps an abandoned restore's reads from printing pages.

  A failed Orbax restore leaves its pending TensorStore reads behind: each
  prints a page when it is collected ('Exception ignored in ...') and a
  traceback when it completes on the closed event loop. Within this
  context, what is printed is held back, and kept back when the restore
  failed, once its reads have been collected and have had time to end.
  """
  hook, stderr = sys.unraisablehook, sys.stderr
  sys.unraisablehook = lambda unraisable: None
  sys.stderr = held = io.StringIO()
  failed = True
  try:
    yield
    failed = False
  finally:
    if failed:
      gc.collect()
      time.sleep(_SETTLE_SECONDS)
    sys.unraisablehook, sys.stderr = hook, stderr
    if not failed:
      stderr.write(held.getvalue())
