"""Saving, restoring, keeping and refusing checkpoints."""

import gc
import os

import flax.traverse_util
import jax
import numpy as np
import pytest

from jingle_jax import checkpoints
from jingle_jax import cli
from jingle_jax import inference
from jingle_jax import run_config
from jingle_jax import optimizers
from jingle_jax.models.cascade import stack_layers
from damage import damage
import train_config

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
  return train_config.changed(tiny_config, {'keep_checkpoints': 2})


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


def test_a_trained_model_loads_with_its_recorded_config(tmp_path, config):
  assert not config.normalise_latents  # no dataset needed
  states = save_steps(tmp_path, config, {5: 1.0, 9: 2.0})
  model = inference.TrainedModel.load(tmp_path)
  assert model.config == config
  assert_same(model.variables['params'], states[5].params)
  assert model.step == 5 and model.updates == int(states[5].step)
  model = inference.TrainedModel.load(tmp_path, 'latest')
  assert_same(model.variables['batch_stats'], states[9].batch_stats)
  assert model.step == 9


@pytest.mark.parametrize('stacked_layers', [True, False])
def test_checkpoints_of_older_layouts_restore(tmp_path, config,
                                              stacked_layers):
  """Workdirs written before AdamW ran flat hold its moments per leaf, and
  those written before each stage's layers ran as one scan also hold
  layers_0, layers_1, ... (params and moments): they restore."""
  config = train_config.changed(config, {'model.num_layers': 2})
  rng = np.random.default_rng(3)
  older = jax.tree.map(
      lambda s: jax.device_put(rng.normal(size=s.shape).astype(s.dtype)),
      checkpoints.abstract_state(config, stacked_layers=stacked_layers,
                                 flat_optimizers=False))
  manager = checkpoints.open_manager(tmp_path, config)
  checkpoints.save(manager, older, data_position=3, rng=jax.random.key(3))
  manager.wait_until_finished()
  metadata = tmp_path / 'checkpoints' / '3' / 'state' / '_METADATA'
  assert ('layers_1' in metadata.read_text()) != stacked_layers
  restored, extras = checkpoints.restore(manager, config)
  manager.close()
  assert extras['data_position'] == 3
  if not stacked_layers:
    older = stack_layers(older)
  for name in ('step', 'params', 'batch_stats', 'disc_params'):
    assert_same(getattr(restored, name), getattr(older, name))
  for params, opt_state, per_leaf in (
      (older.params, restored.opt_state, older.opt_state),
      (older.disc_params, restored.disc_opt_state, older.disc_opt_state)):
    count, mu, nu = optimizers.moments(opt_state, params)
    adam = per_leaf[1][0]
    assert int(count) == int(adam.count)
    frozen = flax.traverse_util.path_aware_map(
        lambda path, _: 'discriminator' in path, params)
    for moment, wanted in ((mu, adam.mu), (nu, adam.nu)):
      jax.tree.map(lambda m, w, f: np.testing.assert_array_equal(
          m, np.zeros_like(w) if f else w), moment, wanted, frozen)


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
  assert sorted(manager.all_steps()) == [1, 2]  # read-only: nothing moved
  gc.collect()  # Orbax's abandoned reads go here, where warnings are off


@pytest.mark.parametrize('how', ['truncate', 'zeros'])
def test_training_moves_an_unreadable_checkpoint_aside(tmp_path, config,
                                                       how):
  """So that the step can be saved again (Orbax skips a save at a step it
  has); the best choice falls back as the latest does."""
  states = save_steps(tmp_path, config, {1: 2.0, 2: 1.0})
  damage(tmp_path, 2, how)
  manager = checkpoints.open_manager(tmp_path, config)
  state, extras = checkpoints.restore(manager, config, 'best',
                                      move_aside=True)
  assert extras['data_position'] == 1
  assert_same(state, states[1])
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2.unreadable']
  assert manager.latest_step() == 1
  again = random_state(config, 22)
  checkpoints.save(manager, again, data_position=2, rng=jax.random.key(2))
  manager.wait_until_finished()
  assert_same(checkpoints.restore(manager, config)[0], again)
  damage(tmp_path, 2, how)  # moved aside again, beside the first
  checkpoints.restore(manager, config, move_aside=True)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == [
      '1', '2.unreadable', '2.unreadable.2']
  manager.close()
  gc.collect()


def test_other_shapes_are_one_clear_error_and_nothing_moves(tmp_path,
                                                            config):
  save_steps(tmp_path, config, {1: None, 2: None})
  config = train_config.changed(config, {'model.mask_hidden': 32})
  manager = checkpoints.open_manager(tmp_path, config, read_only=True)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.restore(manager, config, move_aside=True)
  message = str(error.value)
  assert message.startswith(f'{tmp_path}/checkpoints/2: stored shape ')
  assert 'but the config asks for' in message
  assert 'made with another config' in message and '\n' not in message
  assert sorted(manager.all_steps()) == [1, 2]


def test_nothing_to_restore(tmp_path, config):
  manager = checkpoints.open_manager(tmp_path, config)
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoint'):
    checkpoints.restore(manager, config)
  with pytest.raises(run_config.ConfigError, match='config.json'):
    inference.TrainedModel.load(tmp_path / 'elsewhere')
  (tmp_path / 'config.json').write_text('{"seed": ')
  with pytest.raises(run_config.ConfigError,
                     match='unreadable recorded config'):
    inference.TrainedModel.load(tmp_path)
  for text, which in (('best', 'best'), ('latest', 'latest'), ('120', 120)):
    assert cli.checkpoint_choice(text) == which
  with pytest.raises(ValueError, match="--checkpoint must be.*'newest'"):
    cli.checkpoint_choice('newest')


def test_config_changes_that_alter_checkpoints_are_refused(tmp_path, config):
  run_config.record(tmp_path, config)
  new = {'num_frames': 64, 'optim.learning_rate': 5e-4,
         'model.num_layers': 3}
  changes = run_config.changes(tmp_path, train_config.changed(config, new))
  assert changes == {'model.num_layers': (1, 3), 'num_frames': (32, 64),
                     'optim.learning_rate': (1e-4, 5e-4)}
  checkpoints.refuse_checkpoint_changes(tmp_path, changes)  # no checkpoint
  save_steps(tmp_path, config, {1: None})
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'another model \(model.num_layers 1 -> 3\): use '
                     r'a new --workdir'):
    checkpoints.refuse_checkpoint_changes(tmp_path, changes)
  del changes['model.num_layers']
  checkpoints.refuse_checkpoint_changes(tmp_path, changes)  # allowed
  for gan, refused in ((0.2, False), (0.0, True)):
    gan_change = {'loss.gan_weight': run_config.changes(
        tmp_path, train_config.changed(config, {'loss.gan_weight': gan})
    )['loss.gan_weight']}
    if refused:
      with pytest.raises(checkpoints.CheckpointError, match='gan_weight'):
        checkpoints.refuse_checkpoint_changes(tmp_path, gan_change)
    else:
      checkpoints.refuse_checkpoint_changes(tmp_path, gan_change)
