"""SIGTERM and SIGINT as a request to stop at the next step that can, agreed
by every process of a run."""

import signal

import jax
from jax.experimental import multihost_utils
import numpy as np


class StopSignal:
  """Within `with`, SIGTERM and SIGINT ask the loop to stop instead of killing.

  All processes must stop at the same step: with several, `requested` agrees
  through a collective, so call it at the same steps everywhere.
  """

  def __enter__(self):
    self.received = None  # the signal's name
    self._previous = {sig: signal.signal(sig, self._receive)
                      for sig in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _receive(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signum, self._previous[signum])  # a second one is not held

  def requested(self) -> bool:
    here = self.received is not None
    if jax.process_count() == 1:
      return here
    return bool(np.any(multihost_utils.process_allgather(np.int32(here))))

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
