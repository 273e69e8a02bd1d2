"""Saving, restoring, keeping and refusing checkpoints."""

import copy
import gc
import glob
import logging
import os

import jax
import ml_collections
import numpy as np
import pytest

from jingle_jax import checkpoints

# A failed read leaves Orbax's pending read coroutines to be collected later.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


def random_state(config, seed):
  """A TrainState of the config's shapes with random values (no compiling)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jax.device_put(rng.normal(size=s.shape).astype(s.dtype)),
      checkpoints.abstract_state(config))


def assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a),
               jax.device_get(b))


@pytest.fixture
def config(tiny_config):
  config = ml_collections.ConfigDict(copy.deepcopy(tiny_config))
  config.keep_checkpoints = 2
  return config


def save_steps(workdir, config, val_losses):
  """Saves a random state per {step: val_loss}; returns {step: state}."""
  manager = checkpoints.open_manager(workdir, config)
  states = {}
  for step, val_loss in val_losses.items():
    states[step] = random_state(config, step)
    checkpoints.save(manager, states[step], data_position=step,
                     rng=jax.random.key(step), val_loss=val_loss,
                     evals_since_best=step // 10)
  manager.wait_until_finished()
  manager.close()
  return states


def damage(workdir, step, how):
  """Damages the largest array file of a checkpoint."""
  files = glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state',
                                 '**', 'd', '*'), recursive=True)
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, 'rb').read())
  if how == 'truncate':
    data = data[:len(data) // 2]
  else:  # Orbax reads these back without complaint; the checksum does not
    middle = len(data) // 3
    data[middle:middle + 4096] = bytes(4096)
  with open(path, 'wb') as f:
    f.write(data)


def test_round_trip_keeps_newest_and_best(tmp_path, config):
  states = save_steps(tmp_path, config, {10: 2.0, 20: 1.0, 30: 3.0, 40: None,
                                         50: 2.5})
  manager = checkpoints.open_manager(tmp_path, config, read_only=True)
  assert sorted(manager.all_steps()) == [20, 40, 50]  # newest 2 + best
  state, extras = checkpoints.restore(manager, config)
  assert_same(state, states[50])
  assert extras['data_position'] == 50
  assert extras['step'] == int(states[50].step)
  assert extras['val_loss'] == 2.5
  assert extras['evals_since_best'] == 5
  np.testing.assert_array_equal(jax.random.key_data(extras['rng']),
                                jax.random.key_data(jax.random.key(50)))
  state, extras = checkpoints.restore(manager, config, 'best')
  assert_same(state, states[20])
  assert extras['data_position'] == 20
  assert_same(checkpoints.restore(manager, config, 40)[0], states[40])
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoint 30'):
    checkpoints.restore(manager, config, 30)


def test_load_for_inference_uses_the_recorded_config(tmp_path, config):
  states = save_steps(tmp_path, config, {5: 1.0, 9: 2.0})
  recorded, state, step = checkpoints.load_for_inference(tmp_path)
  assert recorded.to_dict() == config.to_dict()
  assert_same(state, states[5])
  assert step == int(states[5].step)
  _, state, _ = checkpoints.load_for_inference(tmp_path, 'latest')
  assert_same(state, states[9])


@pytest.mark.parametrize('how', ['truncate', 'zeros'])
def test_damaged_latest_falls_back_to_previous(tmp_path, config, how):
  states = save_steps(tmp_path, config, {1: None, 2: None})
  damage(tmp_path, 2, how)
  manager = checkpoints.open_manager(tmp_path, config, read_only=True)
  state, extras = checkpoints.restore(manager, config)
  assert extras['data_position'] == 1
  assert_same(state, states[1])
  with pytest.raises(checkpoints.CheckpointError, match='no readable'):
    checkpoints.restore(manager, config, 2)
  damage(tmp_path, 1, how)
  with pytest.raises(checkpoints.CheckpointError, match='step 2.*\n.*step 1'):
    checkpoints.restore(manager, config)
  gc.collect()  # Orbax's abandoned reads go here, where warnings are off


def test_nothing_to_restore(tmp_path, config):
  manager = checkpoints.open_manager(tmp_path, config)
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoint'):
    checkpoints.restore(manager, config)
  with pytest.raises(checkpoints.CheckpointError, match='config.json'):
    checkpoints.load_for_inference(tmp_path / 'elsewhere')
  (tmp_path / 'config.json').write_text('{"seed": ')
  with pytest.raises(checkpoints.CheckpointError, match='not valid JSON'):
    checkpoints.load_for_inference(tmp_path)


def test_a_changed_config_is_recorded_with_a_warning(tmp_path, config,
                                                      caplog):
  checkpoints.record_config(tmp_path, config)
  config.num_frames = 64
  config.model.num_layers = 3
  with caplog.at_level(logging.WARNING):
    checkpoints.record_config(tmp_path, config)
  assert 'differs from the recorded one in model.num_layers, num_frames' in (
      caplog.text)
  recorded = checkpoints.read_config(tmp_path)
  assert (recorded.num_frames, recorded.model.num_layers) == (64, 3)
