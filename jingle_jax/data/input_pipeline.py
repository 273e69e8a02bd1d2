"""Pairs of latent clips from the cached dataset, batch by batch.

A pair is two consecutive windows of one song: frames [s, s + W) are the input
and [s + W, s + 2W) the target, for s = 0, hop, 2 hop, ... (hop = W gives the
original's consecutive non-overlapping segments). Training pairs every input
with the target of a random training pair when targets are shuffled and
leaves out an epoch's last partial batch; evaluation takes every matched
pair once. When asked, a batch also holds the target clips' 24 kHz audio,
stored with the dataset (float16, the samples of the target window's
frames).

Batches hold the latents as stored (float16 as precompute writes them):
threads copy each window with one pread into a batch buffer that is used
again for the next batch, and the compiled steps convert, check and
normalise them (jingle_jax.data.latent_space). A fault the step reports is
named here (Pairs.fault_error).

The batch of step k is a pure function of (seed, k): step k lies in epoch
k // steps_per_epoch, whose order is drawn by a numpy Generator seeded with
(seed, epoch), so a resumed run sees the same batches. Each process reads
only its rows of the global batch, and a background thread puts batches on
the devices ahead of the step.
"""

import concurrent.futures
import functools
import queue
import threading

import jax
import numpy as np

from jingle_jax.config import run_config
from jingle_jax.core import limits
from jingle_jax.core import parallel
from jingle_jax.data import latents

# Threads that copy a batch's windows: reads from a cold page cache or a
# network disk overlap (docs/BENCHMARKS.md: 4 to 32 read alike here). Each
# holds a file open while it reads: a quarter of what the open-file limit
# leaves to the data, at most.
READ_THREADS = limits.share_of_open_files(16, 0.25)


@functools.cache
def _readers() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(
      READ_THREADS, thread_name_prefix='latent-reader')


def _run_all(jobs) -> None:
  """Runs the callables `jobs`, spread over the reader threads; the first
  error is raised."""
  shares = [jobs[i::READ_THREADS] for i in range(min(READ_THREADS,
                                                     len(jobs)))]
  for _ in _readers().map(lambda share: [job() for job in share], shares):
    pass


def pair_starts(num_frames: int, window: int, hop: int) -> np.ndarray:
  """First frames of the pairs that fit in a song of `num_frames` frames."""
  return np.arange(0, num_frames - 2 * window + 1, hop)


class Pairs:
  """The pairs of a list of songs (in song order) and their reading."""

  def __init__(self, songs, window: int, hop: int, target_audio=False):
    """songs: latents.Song-like (id, frames, dtype, read, read_into, and
    has_audio and read_audio_into when target_audio); target_audio: read()
    also gives the target windows' audio."""
    if window < 1 or hop < 1:
      raise ValueError(f'window ({window}) and hop ({hop}) must be positive')
    self.songs = list(songs)
    self.target_audio = target_audio
    for song in self.songs if target_audio else ():
      if not song.has_audio:
        raise ValueError(f'song {song.id!r} has no audio in the dataset '
                         '(precompute.encode --keep-audio keeps it)')
    self.window = window
    index = [(i, start) for i, song in enumerate(self.songs)
             for start in pair_starts(song.frames, window, hop)]
    # Row p: (song number, first frame of its input window).
    self.index = np.asarray(index, np.int64).reshape(-1, 2)

  def __len__(self) -> int:
    return len(self.index)

  def empty_batch(self, size: int) -> dict[str, np.ndarray]:
    """Buffers for a batch of `size` pairs, in the stored dtypes."""
    dtype = self.songs[0].dtype if self.songs else np.float32
    shape = (size, self.window, latents.LATENT_DIM)
    batch = {'input': np.empty(shape, dtype), 'target': np.empty(shape, dtype)}
    if self.target_audio:
      batch['target_audio'] = np.empty((size, self.window * latents.HOP),
                                       latents.AUDIO_DTYPE)
    return batch

  def read(self, inputs, targets, out=None) -> dict[str, np.ndarray]:
    """{'input', 'target'}: clips [n, W, D] as stored, unchecked.

    The input windows of pairs `inputs` and the target windows of pairs
    `targets` (the same pairs for matched clips); with target_audio also
    'target_audio': float16 [n, W x 320], the target windows' audio. Written
    into `out` (empty_batch(n)) when given.
    """
    batch = self.empty_batch(len(inputs)) if out is None else out
    jobs = []
    for row, (pair, target_pair) in enumerate(zip(inputs, targets)):
      jobs.append(functools.partial(self._read_window, pair, 0,
                                    batch['input'][row]))
      jobs.append(functools.partial(self._read_window, target_pair,
                                    self.window, batch['target'][row]))
      if self.target_audio:
        audio = batch['target_audio'][row].reshape(self.window, latents.HOP)
        jobs.append(functools.partial(self._read_window, target_pair,
                                      self.window, audio, audio=True))
    _run_all(jobs)
    return batch

  def _read_window(self, pair, offset, out, audio=False) -> None:
    song, start = self.index[pair]
    song = self.songs[song]
    read = song.read_audio_into if audio else song.read_into
    read(int(start) + offset, out)

  def fault_error(self, fault, inputs, targets) -> latents.LatentDataError:
    """The error naming the shard, song, frame and channel of a step's
    `fault` (latent_space) in the batch of pairs `inputs`, `targets`."""
    window, element = (int(x) for x in fault)
    pair, offset = ((inputs[window], 0) if window < len(inputs) else
                    (targets[window - len(inputs)], self.window))
    song, start = self.index[pair]
    song = self.songs[song]
    frame, channel = divmod(element, latents.LATENT_DIM)
    frame += int(start) + offset
    try:  # reads it again on the host, which names it as it always has
      song.read(frame, frame + 1)
    except latents.LatentDataError as e:
      return e
    return latents.LatentDataError(
        f'{getattr(song, "shard", song.id)}: song {song.id!r}: frame {frame}, '
        f'channel {channel} was out of bounds when read, and is not now '
        '(was the file changed?)')


def split_pairs(data, num_frames: int, dataset, split: str,
                target_audio=False) -> Pairs:
  """The pairs of clips of `num_frames` of a dataset split as the config's
  data part (config.data) cuts them."""
  return Pairs(dataset.songs(split), num_frames,
               data.window_hop or num_frames, target_audio)


def dataset_pairs(data, num_frames: int, dataset, split: str) -> Pairs:
  """split_pairs of a LatentDataset; ValueError when there is none."""
  pairs = split_pairs(data, num_frames, dataset, split)
  if not len(pairs):
    raise ValueError(f'{dataset.manifest_path}: no {split} pair of 2 x '
                     f'{num_frames} frames (config.num_frames)')
  return pairs


def training_pairs(data, num_frames: int, latent_dim: int,
                   per_device_batch_size: int, target_audio: bool):
  """(dataset, train pairs, val pairs) of config.data.dir: training fills a
  global batch at least. The pairs read the target clips' audio when the
  dataset has it and `target_audio` asks for it."""
  dataset = latents.LatentDataset(data.dir)
  if dataset.mean.shape != (latent_dim,):
    raise run_config.ConfigError(
        f'{data.dir}: latents of {len(dataset.mean)} channels, '
        f'config.model.latent_dim is {latent_dim}')
  train_pairs, val_pairs = (
      split_pairs(data, num_frames, dataset, split,
                  target_audio and dataset.has_audio)
      for split in ('train', 'val'))
  global_batch_size = per_device_batch_size * jax.device_count()
  if len(train_pairs) < global_batch_size:
    raise run_config.ConfigError(
        f'{data.dir}: {len(train_pairs)} train pairs of {num_frames}-frame '
        f'clips, fewer than one global batch of {global_batch_size} '
        f'(config.per_device_batch_size {per_device_batch_size} x '
        f'{jax.device_count()} devices)')
  if not len(val_pairs):
    raise run_config.ConfigError(
        f'{data.dir}: no val pair of {num_frames}-frame clips')
  return dataset, train_pairs, val_pairs


def steps_per_epoch(num_pairs: int, global_batch_size: int) -> int:
  """Full batches in an epoch (the remainder of an epoch is left out)."""
  return num_pairs // global_batch_size


def epoch_order(seed: int, epoch: int, num_pairs: int, shuffle_targets: bool):
  """(input pairs, target pairs) of an epoch, each a permutation."""
  rng = np.random.default_rng([seed, epoch])
  inputs = rng.permutation(num_pairs)
  return inputs, rng.permutation(num_pairs) if shuffle_targets else inputs


def step_pairs(step: int, *, num_pairs: int, seed: int,
               global_batch_size: int, shuffle_targets: bool):
  """(input pairs, target pairs) of the global batch of step `step`."""
  epoch, position = divmod(step, steps_per_epoch(num_pairs,
                                                 global_batch_size))
  chunk = slice(position * global_batch_size,
                (position + 1) * global_batch_size)
  return tuple(order[chunk] for order in epoch_order(
      seed, epoch, num_pairs, shuffle_targets))


def train_batches(pairs: Pairs, *, seed: int, global_batch_size: int,
                  rows: slice, start_step: int, shuffle_targets: bool):
  """This process's `rows` of the training batches from step `start_step` on.

  Endless; epochs follow each other. Every batch is written into the same
  buffers: it holds until the next one is asked for (prefetch_to_devices
  copies it to the devices first).
  """
  per_epoch = steps_per_epoch(len(pairs), global_batch_size)
  if not per_epoch:
    raise ValueError(f'{len(pairs)} pairs, fewer than one batch of '
                     f'{global_batch_size}')
  buffers = pairs.empty_batch(rows.stop - rows.start)
  epoch, position = divmod(start_step, per_epoch)
  while True:
    inputs, targets = epoch_order(seed, epoch, len(pairs), shuffle_targets)
    for position in range(position, per_epoch):
      chunk = slice(position * global_batch_size + rows.start,
                    position * global_batch_size + rows.stop)
      yield pairs.read(inputs[chunk], targets[chunk], buffers)
    epoch, position = epoch + 1, 0


def padded_batches(num: int, batch_size: int):
  """Yields (indices, count): every index of range(num) once, in order.

  Every batch holds batch_size indices (one shape, one compilation): the
  last repeats its final index; only its first `count` rows are real.
  """
  for start in range(0, num, batch_size):
    stop = min(start + batch_size, num)
    padding = np.full(start + batch_size - stop, stop - 1)
    yield np.concatenate([np.arange(start, stop), padding]), stop - start


def eval_batches(pairs: Pairs, *, global_batch_size: int, rows: slice):
  """This process's `rows` of every matched pair, in order (padded_batches).

  batch['weight'] is 1 for a pair and 0 for a repeat, so that every pair
  counts once. Batches reuse their buffers, as train_batches's do.
  """
  buffers = pairs.empty_batch(rows.stop - rows.start)
  for indices, count in padded_batches(len(pairs), global_batch_size):
    batch = pairs.read(indices[rows], indices[rows], buffers)
    batch['weight'] = (np.arange(global_batch_size)[rows] < count).astype(
        np.float32)
    yield batch


class _Failure:

  def __init__(self, error):
    self.error = error


_END = object()


def prefetch_to_devices(batches, *, size: int, sharding,
                        global_batch_size: int):
  """Yields `batches` as global device arrays, `size` of them made ahead.

  A background thread reads and transfers, each batch copied to the devices
  before the next is read (which may reuse its buffers); its errors reach
  the consumer.
  Closing the generator (or leaving a for loop) stops the thread and waits
  for it: a thread still inside a transfer when the interpreter exits
  aborts the process.
  """
  ready = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for batch in batches:
        if not put(parallel.host_batch_to_global(batch, sharding,
                                                 global_batch_size)):
          return
      put(_END)
    except Exception as e:  # pylint: disable=broad-except
      put(_Failure(e))

  producer = threading.Thread(target=produce, daemon=True)
  producer.start()
  try:
    while (item := ready.get()) is not _END:
      if isinstance(item, _Failure):
        raise item.error
      yield item
  finally:
    stop.set()
    producer.join()
