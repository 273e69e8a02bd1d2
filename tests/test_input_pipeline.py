"""Pairs, raw batches in reused buffers, faults named, the order of batches
and prefetching."""

import threading
import types

import numpy as np
import pytest

from jingle_jax.config import run_config
from jingle_jax.core import parallel
from jingle_jax.data import input_pipeline
from jingle_jax.data import latent_space
from jingle_jax.data import latents
import latent_data

WINDOW = 4


def labelled_song(number, frames):
  """Channel 0 names the song and channel 1 the frame of every latent (the
  other channels 0); read as latents.Song reads."""
  values = np.zeros((frames, latents.LATENT_DIM), np.float16)
  values[:, 0], values[:, 1] = number, np.arange(frames)

  def read_into(start, out):
    out[...] = values[start:start + len(out)]

  def read_audio_into(start, out):
    out[...] = song.audio[start:start + len(out)]

  song = types.SimpleNamespace(
      id=f'song{number}', frames=frames, has_audio=False, dtype=values.dtype,
      read_into=read_into, read_audio_into=read_audio_into)
  return song


def copied(batches):
  """The batches, each copied out of the buffers it is read into."""
  return [{name: np.copy(value) for name, value in batch.items()}
          for batch in batches]


def labels(clips):
  """[n, W, 2] labelled clips -> (songs [n], first frames [n])."""
  assert np.all(clips[:, :, 0] == clips[:, :1, 0])
  assert np.all(np.diff(clips[:, :, 1], axis=1) == 1)  # consecutive frames
  return clips[:, 0, 0].astype(int), clips[:, 0, 1].astype(int)


@pytest.fixture
def pairs():
  """Songs of 20, 13 and 7 frames: 4 + 2 + 0 pairs of 2 x 4 frames."""
  songs = [labelled_song(i, n) for i, n in enumerate([20, 13, 7])]
  return input_pipeline.Pairs(songs, WINDOW, WINDOW)


def test_pairs_are_consecutive_windows(pairs):
  assert len(pairs) == 6
  batch = pairs.read(np.arange(6), np.arange(6))
  songs, starts = labels(batch['input'])
  np.testing.assert_array_equal(songs, [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(starts, [0, 4, 8, 12, 0, 4])
  target_songs, target_starts = labels(batch['target'])
  np.testing.assert_array_equal(target_songs, songs)
  np.testing.assert_array_equal(target_starts, starts + WINDOW)
  assert batch['input'].dtype == np.float16  # as stored
  half_hop = input_pipeline.Pairs(pairs.songs, WINDOW, 2)
  assert len(half_hop) == 7 + 3  # starts 0, 2, ..., 12 and 0, 2, 4


def test_target_audio_is_the_target_windows_samples():
  """Sample k of frame f holds 32 song + f + (k % 8) / 8 (exact in the
  stored float16)."""
  def audio(number, frames):
    return (32 * number + np.arange(frames)[:, None] +
            np.arange(latents.HOP) % 8 / 8).astype(np.float16)

  songs = []
  for number, frames in enumerate([20, 13]):
    song = labelled_song(number, frames)
    song.audio = audio(number, frames)
    song.has_audio = True
    songs.append(song)
  pairs = input_pipeline.Pairs(songs, WINDOW, WINDOW, target_audio=True)
  batch = pairs.read(np.array([5, 1]), np.array([1, 5]))
  assert batch['target_audio'].shape == (2, WINDOW * latents.HOP)
  for row, (song, start) in enumerate([(0, 4), (1, 4)]):
    np.testing.assert_array_equal(
        batch['target_audio'][row],
        audio(song, 20)[start + WINDOW:start + 2 * WINDOW].reshape(-1))
  assert 'target_audio' not in input_pipeline.Pairs(
      songs, WINDOW, WINDOW).read([0], [0])
  songs[1].has_audio = False
  with pytest.raises(ValueError, match="song 'song1' has no audio"):
    input_pipeline.Pairs(songs, WINDOW, WINDOW, target_audio=True)


def test_batch_of_a_step_depends_on_seed_and_step_only(pairs):
  def take(start_step, count, seed=3, shuffle_targets=True, rows=slice(0, 2)):
    batches = input_pipeline.train_batches(
        pairs, seed=seed, global_batch_size=2, rows=rows,
        start_step=start_step, shuffle_targets=shuffle_targets)
    return copied(next(batches) for _ in range(count))

  from_start = take(0, 10)  # 3 steps per epoch: epochs 0 to 3
  for a, b in zip(from_start[4:], take(4, 6)):
    np.testing.assert_array_equal(a['input'], b['input'])
    np.testing.assert_array_equal(a['target'], b['target'])
  other_seed = take(0, 3, seed=4)
  assert any(not np.array_equal(a['input'], b['input'])
             for a, b in zip(from_start, other_seed))

  songs, starts = labels(np.concatenate([b['input'] for b in from_start[:3]]))
  assert len(set(zip(songs, starts))) == 6  # every pair once per epoch
  target_songs, target_starts = labels(
      np.concatenate([b['target'] for b in from_start[:3]]))
  # Every target once too, but with other inputs.
  assert set(zip(target_songs, target_starts - WINDOW)) == set(zip(songs,
                                                                   starts))
  assert not (np.array_equal(target_songs, songs) and
              np.array_equal(target_starts, starts + WINDOW))
  matched = take(0, 3, shuffle_targets=False)
  for batch in matched:
    songs, starts = labels(batch['input'])
    np.testing.assert_array_equal(labels(batch['target'])[0], songs)
    np.testing.assert_array_equal(labels(batch['target'])[1], starts + WINDOW)
  # Two processes reading halves see the global batch between them.
  halves = [take(0, 3, rows=slice(0, 1)), take(0, 3, rows=slice(1, 2))]
  for whole, first, second in zip(from_start, *halves):
    np.testing.assert_array_equal(
        whole['input'], np.concatenate([first['input'], second['input']]))
  # step_pairs names the pairs of any step's global batch.
  for step, batch in enumerate(from_start):
    inputs, targets = input_pipeline.step_pairs(
        step, num_pairs=len(pairs), seed=3, global_batch_size=2,
        shuffle_targets=True)
    np.testing.assert_array_equal(batch['input'],
                                  pairs.read(inputs, targets)['input'])
    np.testing.assert_array_equal(batch['target'],
                                  pairs.read(inputs, targets)['target'])


def test_batches_are_read_into_the_same_buffers(pairs):
  batches = input_pipeline.train_batches(
      pairs, seed=0, global_batch_size=2, rows=slice(0, 2), start_step=0,
      shuffle_targets=True)
  first = next(batches)
  buffers = {name: value.ctypes.data for name, value in first.items()}
  second = next(batches)
  assert {name: value.ctypes.data for name, value in second.items()} == (
      buffers)


def test_validation_batches_hold_every_matched_pair_once(pairs):
  batches = copied(input_pipeline.eval_batches(pairs, global_batch_size=4,
                                               rows=slice(0, 4)))
  assert len(batches) == 2  # 6 pairs: a full batch and 2 pairs + 2 repeats
  songs, starts = labels(batches[0]['input'])
  np.testing.assert_array_equal(starts, [0, 4, 8, 12])
  np.testing.assert_array_equal(labels(batches[0]['target'])[1], starts + 4)
  np.testing.assert_array_equal(batches[0]['weight'], [1, 1, 1, 1])
  np.testing.assert_array_equal(batches[1]['weight'], [1, 1, 0, 0])
  last = labels(batches[1]['input'])
  assert len({tuple(x) for x in zip(*last)}) == 2  # the repeats repeat
  # A process's rows of a global batch, their weights with them.
  rows = copied(input_pipeline.eval_batches(pairs, global_batch_size=4,
                                            rows=slice(2, 4)))
  np.testing.assert_array_equal(rows[1]['weight'], [0, 0])
  np.testing.assert_array_equal(rows[0]['input'], batches[0]['input'][2:])


def test_windows_are_the_stored_values_and_faults_are_named(tmp_path):
  """Batches hold the shards' bytes; a fault the step finds in them is
  named as a host check names it: shard, song, frame and channel."""
  rng = np.random.default_rng(0)
  songs = {f's{i}': (split, rng.normal(size=(30, latents.LATENT_DIM))
                     .astype(np.float16))
           for i, split in enumerate(['train', 'train', 'val'])}
  latent_data.write_dataset(tmp_path, songs)
  dataset = latents.LatentDataset(tmp_path)
  train = input_pipeline.split_pairs(run_config.DataConfig(), 10, dataset,
                                     'train')
  assert len(train) == 2 * 2  # starts 0 and 10 in each song
  inputs, targets = np.array([3, 0]), np.array([1, 2])
  batch = train.read(inputs, targets)
  np.testing.assert_array_equal(batch['input'][0], songs['s1'][1][10:20])
  np.testing.assert_array_equal(batch['target'][1], songs['s1'][1][10:20])

  shard = np.load(tmp_path / 'song-s1.npy', mmap_mode='r+')
  shard[14, 7] = np.inf  # pair 3's input, pair 2's target window
  shard.flush()
  del shard
  space = latent_space.LatentSpace.of(False, dataset)
  fault = np.asarray(space.fault(*(train.read(inputs, targets)[name]
                                   for name in ('input', 'target'))))
  np.testing.assert_array_equal(fault, [0, 4 * latents.LATENT_DIM + 7])
  with pytest.raises(latents.LatentDataError, match=(
      r"song-s1.npy: song 's1': frame 14, channel 7 is inf, not finite")):
    raise train.fault_error(fault, inputs, targets)
  fault = np.asarray(space.fault(*(train.read(inputs[::-1], targets[::-1])[
      name] for name in ('input', 'target'))))
  np.testing.assert_array_equal(fault, [1, 4 * latents.LATENT_DIM + 7])
  assert 'frame 14, channel 7' in str(
      train.fault_error(fault, inputs[::-1], targets[::-1]))


def test_a_window_of_a_shard_cut_short_is_named(tmp_path):
  songs = {'a': ('train', np.zeros((30, latents.LATENT_DIM), np.float16))}
  latent_data.write_dataset(tmp_path, songs)
  dataset = latents.LatentDataset(tmp_path)
  train = input_pipeline.Pairs(dataset.songs('train'), 10, 10)
  path = tmp_path / 'song-a.npy'
  path.write_bytes(path.read_bytes()[:-latents.LATENT_DIM * 2 * 5])
  with pytest.raises(latents.LatentDataError,
                     match='song-a.npy: unreadable or truncated shard'):
    train.read([0], [0])


def test_prefetch_puts_batches_on_devices_and_stops(pairs):
  split = parallel.data_sharding(parallel.make_mesh())
  host = copied(input_pipeline.eval_batches(pairs, global_batch_size=2,
                                            rows=slice(0, 2)))
  threads = set(threading.enumerate())
  prefetched = input_pipeline.prefetch_to_devices(
      iter(host), size=1, sharding=split, global_batch_size=2)
  first = next(prefetched)
  assert first['input'].sharding == split
  np.testing.assert_array_equal(first['input'], host[0]['input'])
  host[0]['input'][:] = -5  # the devices hold copies: buffers are reused
  assert not np.any(np.asarray(first['input']) == -5)
  assert set(threading.enumerate()) - threads  # the producer
  prefetched.close()  # a consumer that stops early: joins the producer
  assert not set(threading.enumerate()) - threads

  def failing():
    yield host[0]
    raise latents.LatentDataError('bad.npy: truncated')

  prefetched = input_pipeline.prefetch_to_devices(
      failing(), size=2, sharding=split, global_batch_size=2)
  next(prefetched)
  with pytest.raises(latents.LatentDataError, match='bad.npy'):
    next(prefetched)


def test_padded_batches_cover_every_index_once_in_one_shape():
  batches = list(input_pipeline.padded_batches(7, 3))
  assert [len(indices) for indices, _ in batches] == [3, 3, 3]
  assert [count for _, count in batches] == [3, 3, 1]
  real = np.concatenate([indices[:count] for indices, count in batches])
  np.testing.assert_array_equal(real, np.arange(7))
  np.testing.assert_array_equal(batches[-1][0], [6, 6, 6])
