"""Wall time of a call, as the benchmarks report it."""

import time

import numpy as np


def median_seconds(run, repeats: int) -> float:
  """Median wall time of run() over `repeats` calls, after one warm-up."""
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def print_rates(rows, audio_seconds: float) -> None:
  """One line per (name, seconds per batch) of a batch of audio_seconds."""
  for name, seconds in rows:
    print(f'  {name:12s} {seconds:8.3f} s per batch, '
          f'{audio_seconds / seconds:7.1f}x real time')
