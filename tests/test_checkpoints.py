"""The run directory: saving, restoring, keeping and refusing checkpoints."""

import dataclasses
import gc
import os

import flax.traverse_util
import jax
import numpy as np
import pytest

from jingle_jax import cli
from jingle_jax.config import run_config
from jingle_jax.inference import trained_model
from jingle_jax.models.cascade import stack_layers
from jingle_jax.training import optimizers
from jingle_jax.training import run_dir
from damage import damage
import train_config

# A failed read leaves Orbax's pending read coroutines to be collected later.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


def random_state(config, seed, **layout):
  """A TrainState of the config's shapes (in the `layout` of
  run_dir.abstract_state) with random values (no compiling)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jax.device_put(rng.normal(size=s.shape).astype(s.dtype)),
      run_dir.abstract_state(config, **layout))


def assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a),
               jax.device_get(b))


@pytest.fixture
def config(tiny_config):
  return train_config.changed(tiny_config, {'keep_checkpoints': 2})


def extras(step, val_loss=None, state=None):
  return run_dir.CheckpointExtras(
      data_position=step, rng=jax.random.key(step), val_loss=val_loss,
      evals_since_best=step // 10,
      updates=0 if state is None else int(state.step))


def save_steps(workdir, config, val_losses):
  """Saves a random state per {step: val_loss}; returns {step: state}."""
  training_run = run_dir.open_for_training(workdir, config)
  states = {}
  for step, val_loss in val_losses.items():
    states[step] = random_state(config, step)
    training_run.save(states[step], extras(step, val_loss, states[step]))
  training_run.close()
  return states


def stored_steps(workdir):
  return sorted(os.listdir(workdir / 'checkpoints'))


def test_round_trip_keeps_newest_and_best(tmp_path, config):
  states = save_steps(tmp_path, config, {10: 2.0, 20: 1.0, 30: 3.0, 40: None,
                                         50: 2.5})
  assert stored_steps(tmp_path) == ['20', '40', '50']  # newest 2 + best
  recorded, state, restored = run_dir.load(tmp_path, 'latest')
  assert recorded == config
  assert_same(state, states[50])
  assert restored == dataclasses.replace(extras(50, 2.5, states[50]),
                                         rng=restored.rng)
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(jax.random.key(50)))
  _, state, restored = run_dir.load(tmp_path, 'best')
  assert_same(state, states[20])
  assert restored.data_position == 20
  assert_same(run_dir.load(tmp_path, 40)[1], states[40])
  with pytest.raises(run_dir.CheckpointError, match='no checkpoint 30'):
    run_dir.load(tmp_path, 30)


def test_the_moving_average_is_checkpointed_and_is_what_inference_runs(
    tmp_path, config):
  config = train_config.changed(config, {'optim.ema_decay': 0.999})
  states = save_steps(tmp_path, config, {4: 1.0})
  _, state, _ = run_dir.load(tmp_path, 'latest')
  assert jax.tree.leaves(state.ema_params)
  assert_same(state, states[4])
  model = trained_model.TrainedModel.load(tmp_path)
  assert_same(model.variables['params'], states[4].ema_params)


def test_a_trained_model_loads_with_its_recorded_config(tmp_path, config):
  assert not config.data.normalise_latents  # no dataset needed
  states = save_steps(tmp_path, config, {5: 1.0, 9: 2.0})
  model = trained_model.TrainedModel.load(tmp_path)
  assert model.config == config
  assert_same(model.variables['params'], states[5].params)
  assert model.step == 5 and model.updates == int(states[5].step)
  model = trained_model.TrainedModel.load(tmp_path, 'latest')
  assert_same(model.variables['batch_stats'], states[9].batch_stats)
  assert model.step == 9


@pytest.mark.parametrize('stacked_layers', [True, False])
def test_checkpoints_of_older_layouts_restore(tmp_path, config,
                                              stacked_layers):
  """Workdirs written before AdamW ran flat hold its moments per leaf, and
  those written before each stage's layers ran as one scan also hold
  layers_0, layers_1, ... (params and moments): they restore."""
  config = train_config.changed(config, {'model.num_layers': 2})
  older = random_state(config, 3, stacked_layers=stacked_layers,
                       flat_optimizers=False)
  training_run = run_dir.open_for_training(tmp_path, config)
  training_run.save(older, extras(3))
  training_run.close()
  metadata = tmp_path / 'checkpoints' / '3' / 'state' / '_METADATA'
  assert ('layers_1' in metadata.read_text()) != stacked_layers
  _, restored, restored_extras = run_dir.load(tmp_path, 'latest')
  assert restored_extras.data_position == 3
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
  _, state, restored = run_dir.load(tmp_path, 'latest')
  assert restored.data_position == 1
  assert_same(state, states[1])
  with pytest.raises(run_dir.CheckpointError, match='no readable'):
    run_dir.load(tmp_path, 2)
  damage(tmp_path, 1, how)
  with pytest.raises(run_dir.CheckpointError, match='step 2.*\n.*step 1'):
    run_dir.load(tmp_path, 'latest')
  assert stored_steps(tmp_path) == ['1', '2']  # loading moves nothing
  gc.collect()  # Orbax's abandoned reads go here, where warnings are off


@pytest.mark.parametrize('how', ['truncate', 'zeros'])
def test_training_moves_an_unreadable_checkpoint_aside(tmp_path, config,
                                                       how):
  """So that the step can be saved again (Orbax skips a save at a step it
  has)."""
  states = save_steps(tmp_path, config, {1: 2.0, 2: 1.0})
  damage(tmp_path, 2, how)
  training_run = run_dir.open_for_training(tmp_path, config)
  state, restored = training_run.restore()
  assert restored.data_position == 1
  assert_same(state, states[1])
  assert stored_steps(tmp_path) == ['1', '2.unreadable']
  assert training_run.latest_step() == 1
  again = random_state(config, 22)
  training_run.save(again, extras(2))
  training_run.manager.wait_until_finished()
  assert_same(training_run.restore()[0], again)
  damage(tmp_path, 2, how)  # moved aside again, beside the first
  training_run.restore()
  assert stored_steps(tmp_path) == ['1', '2.unreadable', '2.unreadable.2']
  training_run.close()
  gc.collect()


def test_other_shapes_are_one_clear_error_and_nothing_moves(tmp_path,
                                                            config):
  """A recorded config that does not fit its checkpoints (edited or copied
  over) is named in one line."""
  save_steps(tmp_path, config, {1: None, 2: None})
  run_dir.record_config(tmp_path, train_config.changed(
      config, {'model.mask_hidden': 32}))
  with pytest.raises(run_dir.CheckpointError) as error:
    run_dir.load(tmp_path, 'latest')
  message = str(error.value)
  assert message.startswith(f'{tmp_path}/checkpoints/2: stored shape ')
  assert 'but the config asks for' in message
  assert 'made with another config' in message and '\n' not in message
  assert stored_steps(tmp_path) == ['1', '2']


def test_nothing_to_restore(tmp_path, config):
  training_run = run_dir.open_for_training(tmp_path, config)
  assert training_run.restore() is None  # a new run
  training_run.close()
  with pytest.raises(run_dir.CheckpointError, match='no checkpoint'):
    run_dir.load(tmp_path)
  with pytest.raises(run_config.ConfigError, match='config.json'):
    trained_model.TrainedModel.load(tmp_path / 'elsewhere')
  (tmp_path / 'config.json').write_text('{"seed": ')
  with pytest.raises(run_config.ConfigError,
                     match='unreadable recorded config'):
    trained_model.TrainedModel.load(tmp_path)
  for text, which in (('best', 'best'), ('latest', 'latest'), ('120', 120)):
    assert cli.checkpoint_choice(text) == which
  with pytest.raises(ValueError, match="--checkpoint must be.*'newest'"):
    cli.checkpoint_choice('newest')


def test_config_changes_that_alter_checkpoints_are_refused(tmp_path, config):
  """Before anything is written; other changes are returned, to be logged."""
  def reopen(fields):
    training_run = run_dir.open_for_training(
        tmp_path, train_config.changed(config, fields))
    training_run.close()
    return training_run.changes

  run_dir.record_config(tmp_path, config)
  new = {'num_frames': 64, 'optim.learning_rate': 5e-4,
         'model.num_layers': 3}
  assert reopen(new) == {'model.num_layers': (1, 3), 'num_frames': (32, 64),
                         'optim.learning_rate': (1e-4, 5e-4)}  # no checkpoint
  run_dir.record_config(tmp_path, config)
  save_steps(tmp_path, config, {1: None})
  recorded = (tmp_path / 'config.json').read_text()
  with pytest.raises(run_dir.CheckpointError,
                     match=r'another model \(model.num_layers 1 -> 3\): use '
                     r'a new --workdir'):
    reopen(new)
  assert (tmp_path / 'config.json').read_text() == recorded
  del new['model.num_layers']
  assert set(reopen(new)) == {'num_frames', 'optim.learning_rate'}
  run_dir.record_config(tmp_path, config)
  assert reopen({'loss.gan_weight': 0.2}) == {'loss.gan_weight': (0.1, 0.2)}
  run_dir.record_config(tmp_path, config)
  with pytest.raises(run_dir.CheckpointError, match='gan_weight'):
    reopen({'loss.gan_weight': 0.0})  # the discriminator's state would go
  with pytest.raises(run_dir.CheckpointError, match='checkpoints already'):
    run_dir.open_for_training(tmp_path, config, new=True)
