"""Where a loop's time goes: waiting for data, the host, the device."""

import time

from jingle_jax.training import step_timing

DEVICE_SECONDS = 0.05  # each step's time on a simulated device
DATA_SECONDS = 0.02  # each batch's wait


class Device:
  """Runs steps one after another; a step's output is ready when it ends."""

  def __init__(self):
    self.free_at = time.perf_counter()

  def run(self):
    self.free_at = max(self.free_at, time.perf_counter()) + DEVICE_SECONDS
    return Output(self.free_at)


class Output:

  def __init__(self, ready_at):
    self.ready_at = ready_at

  def block_until_ready(self):
    time.sleep(max(0.0, self.ready_at - time.perf_counter()))
    return self


def test_a_window_splits_wall_time_into_data_host_and_device():
  timer, device = step_timing.StepTimer(), Device()
  steps = 6
  for _ in range(steps):
    with timer.waiting_for_data():
      time.sleep(DATA_SECONDS)
    started = time.perf_counter()
    output = device.run()
    timer.dispatched(started, output)
  with timer.waiting_for_device():
    output.block_until_ready()
  window = timer.window(pairs_per_step=8)
  assert set(window) == set(step_timing.METRICS)
  # The device ran every step back to back: its time per step is its own,
  # whatever the host waited for meanwhile.
  assert DEVICE_SECONDS * 1e3 * 0.9 < window['device_ms_per_step'] < (
      DEVICE_SECONDS * 1e3 * 3)
  wall = steps * 8 / window['pairs_per_second']
  assert wall >= steps * DEVICE_SECONDS * 0.99
  # The data waits overlapped the device's work; they are a share of the
  # wall time, and the host itself did next to nothing.
  assert abs(window['data_wait_fraction'] - steps * DATA_SECONDS / wall) < (
      0.1)
  assert window['host_ms_per_step'] < DATA_SECONDS * 1e3

  timer.restart()  # a new window: the device idles while data is awaited
  for _ in range(2):
    with timer.waiting_for_data():
      time.sleep(3 * DEVICE_SECONDS)
    started = time.perf_counter()
    timer.dispatched(started, device.run())
  window = timer.window(pairs_per_step=8)
  assert window['data_wait_fraction'] > 0.5
  assert window['device_ms_per_step'] < DEVICE_SECONDS * 1e3 * 2
