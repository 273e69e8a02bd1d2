"""Where a training loop's wall time goes, window by window.

The loop times its waits for data and for the device; a thread waits on
each step's outputs in turn, so that the device's time per step is known
without the loop waiting: a step is busy from its dispatch, or the end of
the step before it if that came later, to the moment its outputs are ready.
"""

import contextlib
import queue
import threading
import time

import jax

# The figures of a window (StepTimer.window), logged with the train metrics.
METRICS = ('pairs_per_second', 'data_wait_fraction', 'host_ms_per_step',
           'device_ms_per_step')


class StepTimer:
  """Times one window of steps after another (start: the constructor)."""

  def __init__(self):
    self._steps = queue.Queue()
    self._lock = threading.Lock()
    self._last_done = 0.0
    self._watcher = threading.Thread(target=self._watch, daemon=True)
    self._watcher.start()
    self.restart()

  def restart(self) -> None:
    """A new window from now (e.g. after a validation)."""
    with self._lock:
      self._start = time.perf_counter()
      self._data_wait = self._device_wait = self._device_busy = 0.0
      self._dispatched = self._completed = 0

  @contextlib.contextmanager
  def waiting_for_data(self):
    start = time.perf_counter()
    yield
    self._data_wait += time.perf_counter() - start

  @contextlib.contextmanager
  def waiting_for_device(self):
    start = time.perf_counter()
    yield
    self._device_wait += time.perf_counter() - start

  def dispatched(self, started: float, outputs) -> None:
    """A step dispatched at `started` (perf_counter) whose `outputs` are
    ready when it has run."""
    self._dispatched += 1
    self._steps.put((started, outputs))

  def _watch(self) -> None:
    while True:
      started, outputs = self._steps.get()
      jax.block_until_ready(outputs)
      done = time.perf_counter()
      with self._lock:
        self._device_busy += done - max(started, self._last_done)
        self._completed += 1
        self._last_done = done
      self._steps.task_done()

  def window(self, pairs_per_step: int) -> dict[str, float]:
    """The window's figures, once its steps have run (call after waiting
    for them): pairs per second, the fraction of wall time spent waiting
    for data, and the host's and the device's milliseconds per step."""
    self._steps.join()
    with self._lock:
      wall = time.perf_counter() - self._start
      steps = max(self._dispatched, 1)
      host = wall - self._data_wait - self._device_wait
      return {'pairs_per_second': self._dispatched * pairs_per_step / wall,
              'data_wait_fraction': self._data_wait / wall,
              'host_ms_per_step': 1e3 * host / steps,
              'device_ms_per_step': (1e3 * self._device_busy /
                                     max(self._completed, 1))}
