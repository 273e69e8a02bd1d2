"""What a training run shows: metrics.jsonl, TensorBoard (scalars, notes,
pictures, audio), a progress bar.

Only process 0 writes; elsewhere every method does nothing. A run resumed
from step s drops the records after s that a killed run left behind, so
metrics.jsonl and TensorBoard read as one uninterrupted run.
"""

import json
import math
import os
import sys

from absl import logging
import jax
import numpy as np
import tqdm

from jingle_jax.core import files


def _tensorboardx_without_torch():
  """tensorboardX, imported with torch hidden from it.

  It imports torch whenever torch is installed (the precompute extra installs
  it), only to accept torch tensors; the training path logs floats and must
  stay torch-free.
  """
  if 'torch' in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules['torch'] = None  # makes `import torch` raise ImportError
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return tensorboardX

BAR_METRICS = ('loss', 'complementarity', 'input_mask_mean',
               'target_mask_mean')


def read_records(path) -> list[dict]:
  """The records of a metrics.jsonl, less a torn last line (killed run)."""
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def _json_value(value):
  value = float(value)
  return value if math.isfinite(value) else None


class RunLog:
  """metrics.jsonl records {step, split, metric: value} and TensorBoard."""

  def __init__(self, path, tensorboard_dir, *, start_step: int,
               total_steps: int):
    """path: metrics.jsonl; tensorboard_dir: TensorBoard's folder."""
    self._active = jax.process_index() == 0
    if not self._active:
      return
    if os.path.exists(path):
      kept = [r for r in read_records(path) if r['step'] <= start_step]
      files.write_text(path, ''.join(json.dumps(r) + '\n'
                                              for r in kept))
    self._file = open(path, 'a')
    self._tensorboard = _tensorboardx_without_torch().SummaryWriter(
        tensorboard_dir, purge_step=start_step + 1)
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                          dynamic_ncols=True)

  def write(self, step: int, split: str, metrics: dict) -> None:
    """One record; `split` is 'train' or 'val'."""
    if not self._active:
      return
    values = {name: _json_value(value) for name, value in metrics.items()}
    self._file.write(json.dumps({'step': step, 'split': split, **values}) +
                     '\n')
    self._file.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f'{split}/{name}', value, step)
    if split == 'train':
      self._bar.set_postfix({name: f'{metrics[name]:.4f}'
                             for name in BAR_METRICS if name in metrics})

  def image(self, step: int, tag: str, pixels) -> None:
    """An RGB picture [H, W, 3] uint8 in TensorBoard's images tab."""
    if self._active:
      self._tensorboard.add_image(tag, pixels, step, dataformats='HWC')

  def audio(self, step: int, tag: str, samples, sample_rate: int) -> None:
    """Mono audio in TensorBoard's audio tab (clipped to [-1, 1])."""
    if self._active:
      self._tensorboard.add_audio(tag, np.clip(samples, -1.0, 1.0), step,
                                  sample_rate=sample_rate)

  def advance(self, steps: int = 1) -> None:
    if self._active:
      self._bar.update(steps)

  def note(self, step: int, text: str) -> None:
    """A remark on the run (e.g. a changed config): logged as a warning and
    kept in TensorBoard's text tab."""
    if self._active:
      logging.warning('step %d: %s', step, text)
      self._tensorboard.add_text('run', text, step)

  def summary(self, line: str) -> None:
    """A line printed above the progress bar."""
    if self._active:
      self._bar.write(line)

  def close(self) -> None:
    if self._active:
      self._bar.close()
      self._tensorboard.close()
      self._file.close()
