"""Pairs of latent clips from the cached dataset, batch by batch.

A pair is two consecutive windows of one song: frames [s, s + W) are the input
and [s + W, s + 2W) the target, for s = 0, hop, 2 hop, ... (hop = W gives the
original's consecutive non-overlapping segments). Training pairs every input
with the target of a random training pair when targets are shuffled and
leaves out an epoch's last partial batch; evaluation takes every matched
pair once. Latents are normalised per channel with the
training statistics of the manifest. When asked, a batch also holds the
target clips' 24 kHz audio, stored with the dataset (float16, the samples
of the target window's frames).

The batch of step k is a pure function of (seed, k): step k lies in epoch
k // steps_per_epoch, whose order is drawn by a numpy Generator seeded with
(seed, epoch), so a resumed run sees the same batches. Each process reads
only its rows of the global batch, and a background thread puts batches on
the devices ahead of the step.
"""

import dataclasses
import queue
import threading

import jax
import numpy as np

from jingle_jax import audio_losses
from jingle_jax import latents
from jingle_jax import parallel
from jingle_jax import run_config


@dataclasses.dataclass(frozen=True)
class Normaliser:
  """Per-channel standardisation, (x - mean) / std, and its inverse."""
  mean: np.ndarray  # [D] float32
  std: np.ndarray  # [D] float32

  @classmethod
  def from_dataset(cls, dataset) -> 'Normaliser':
    return cls(np.asarray(dataset.mean, np.float32),
               np.asarray(dataset.std, np.float32))

  @classmethod
  def for_config(cls, config, dataset=None) -> 'Normaliser':
    """The dataset's statistics, or the identity (raw latents) when
    config.normalise_latents is off."""
    if config.normalise_latents:
      return cls.from_dataset(dataset)
    dim = config.model.latent_dim
    return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

  def normalise(self, latents) -> np.ndarray:
    return (np.asarray(latents, np.float32) - self.mean) / self.std

  def denormalise(self, latents) -> np.ndarray:
    return np.asarray(latents, np.float32) * self.std + self.mean


def pair_starts(num_frames: int, window: int, hop: int) -> np.ndarray:
  """First frames of the pairs that fit in a song of `num_frames` frames."""
  return np.arange(0, num_frames - 2 * window + 1, hop)


class Pairs:
  """The pairs of a list of songs (in song order) and their reading."""

  def __init__(self, songs, window: int, hop: int, normaliser: Normaliser,
               target_audio: bool = False):
    """songs: latents.Song-like (frames, read, and audio when target_audio);
    target_audio: read() also gives the target windows' audio."""
    if window < 1 or hop < 1:
      raise ValueError(f'window ({window}) and hop ({hop}) must be positive')
    self.songs = list(songs)
    self.target_audio = target_audio
    for song in self.songs if target_audio else ():
      if not song.has_audio:
        raise ValueError(f'song {song.id!r} has no audio in the dataset '
                         '(precompute.encode --keep-audio keeps it)')
    self.window = window
    self.normaliser = normaliser
    index = [(i, start) for i, song in enumerate(self.songs)
             for start in pair_starts(song.frames, window, hop)]
    # Row p: (song number, first frame of its input window).
    self.index = np.asarray(index, np.int64).reshape(-1, 2)

  def __len__(self) -> int:
    return len(self.index)

  def _windows(self, pairs, offset: int, audio=False) -> np.ndarray:
    """The windows of `pairs`, `offset` frames after their first frame:
    latents (their values checked as they are read) or audio."""
    windows = []
    for song, start in self.index[pairs]:
      song, start = self.songs[song], start + offset
      windows.append(song.audio[start:start + self.window] if audio
                     else song.read(start, start + self.window))
    return np.stack(windows)

  def read(self, inputs, targets) -> dict[str, np.ndarray]:
    """{'input', 'target'}: normalised float32 clips [n, W, D].

    The input windows of pairs `inputs` and the target windows of pairs
    `targets` (the same pairs for matched clips); with target_audio also
    'target_audio': float16 [n, W x 320], the target windows' audio. A
    latent that is not finite or far out of the dataset's range is a
    LatentDataError naming its shard, song and frame.
    """
    batch = {'input': self.normaliser.normalise(self._windows(inputs, 0)),
             'target': self.normaliser.normalise(
                 self._windows(targets, self.window))}
    if self.target_audio:
      audio = self._windows(targets, self.window, audio=True)
      batch['target_audio'] = audio.reshape(len(audio), -1)
    return batch


def split_pairs(config, dataset, split: str, target_audio=False) -> Pairs:
  """The pairs of a dataset split as the config cuts them."""
  return Pairs(dataset.songs(split), config.num_frames,
               config.window_hop or config.num_frames,
               Normaliser.for_config(config, dataset), target_audio)


def dataset_pairs(config, dataset, split: str) -> Pairs:
  """split_pairs of a LatentDataset; ValueError when there is none."""
  pairs = split_pairs(config, dataset, split)
  if not len(pairs):
    raise ValueError(f'{dataset.manifest_path}: no {split} pair of 2 x '
                     f'{config.num_frames} frames (config.num_frames)')
  return pairs


def training_pairs(config, global_batch_size: int):
  """(dataset, train pairs, val pairs): training fills a global batch at
  least. The pairs read the target clips' audio when the dataset has it and
  an audio term compares with it."""
  dataset = latents.LatentDataset(config.data_dir)
  if dataset.mean.shape != (config.model.latent_dim,):
    raise run_config.ConfigError(
        f'{config.data_dir}: latents of {len(dataset.mean)} channels, '
        f'config.model.latent_dim is {config.model.latent_dim}')
  target_audio = dataset.has_audio and audio_losses.weighted(
      config.loss, audio_losses.TARGET_TERMS)
  train_pairs, val_pairs = (
      split_pairs(config, dataset, split, target_audio)
      for split in ('train', 'val'))
  if len(train_pairs) < global_batch_size:
    raise run_config.ConfigError(
        f'{config.data_dir}: {len(train_pairs)} train pairs of '
        f'{config.num_frames}-frame clips, fewer than one global batch of '
        f'{global_batch_size} (config.per_device_batch_size '
        f'{config.per_device_batch_size} x {jax.device_count()} devices)')
  if not len(val_pairs):
    raise run_config.ConfigError(
        f'{config.data_dir}: no val pair of {config.num_frames}-frame clips')
  return dataset, train_pairs, val_pairs


def steps_per_epoch(num_pairs: int, global_batch_size: int) -> int:
  """Full batches in an epoch (the remainder of an epoch is left out)."""
  return num_pairs // global_batch_size


def epoch_order(seed: int, epoch: int, num_pairs: int, shuffle_targets: bool):
  """(input pairs, target pairs) of an epoch, each a permutation."""
  rng = np.random.default_rng([seed, epoch])
  inputs = rng.permutation(num_pairs)
  return inputs, rng.permutation(num_pairs) if shuffle_targets else inputs


def train_batches(pairs: Pairs, *, seed: int, global_batch_size: int,
                  rows: slice, start_step: int, shuffle_targets: bool):
  """This process's `rows` of the training batches from step `start_step` on.

  Endless; epochs follow each other.
  """
  per_epoch = steps_per_epoch(len(pairs), global_batch_size)
  if not per_epoch:
    raise ValueError(f'{len(pairs)} pairs, fewer than one batch of '
                     f'{global_batch_size}')
  epoch, position = divmod(start_step, per_epoch)
  while True:
    inputs, targets = epoch_order(seed, epoch, len(pairs), shuffle_targets)
    for position in range(position, per_epoch):
      chunk = slice(position * global_batch_size + rows.start,
                    position * global_batch_size + rows.stop)
      yield pairs.read(inputs[chunk], targets[chunk])
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
  counts once.
  """
  for indices, count in padded_batches(len(pairs), global_batch_size):
    batch = pairs.read(indices[rows], indices[rows])
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

  A background thread reads and transfers; its errors reach the consumer.
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
