"""The config schema: checks naming the field, recorded configs brought up
to date, and a field added in one place reaching every use."""

import dataclasses
import json
import re

import flax.traverse_util
import jax.numpy as jnp
import pytest

from configs import creative
from configs import creative_stable
from configs import demo
from jingle_jax.config import run_config
from jingle_jax.config.fields import field
from jingle_jax.training import run_dir


@pytest.fixture
def config():
  return creative.get_config()


@pytest.mark.parametrize('name, value, message', [
    ('model.remat', 'all', "config.model.remat is 'all', not one of"),
    ('model.fixed_masking', 'random', "fixed_masking is 'random', not one of"),
    ('model.fixed_masking', 'temporal',
     'needs config.model.use_creative_agent'),
    ('model.compute_dtype', 'float64', "compute_dtype is 'float64', not one"),
    ('model.num_layers', 0, 'config.model.num_layers must be at least 1'),
    ('num_frames', 0, 'config.num_frames must be at least 1'),
    ('eval_every_steps', 0, 'config.eval_every_steps must be -1 or'),
    ('data.window_hop', -1, 'config.data.window_hop must not be negative'),
    ('num_frames', 2001, 'num_frames (2001) exceeds config.model.max_len'),
    ('optim.ema_decay', 1.0, 'config.optim.ema_decay must be below 1.0'),
    ('loss.disc_label_smoothing', 0.5,
     'config.loss.disc_label_smoothing must be below 0.5'),
])
def test_fields_are_checked_naming_the_field(config, name, value, message):
  run_config.parse(config)
  *parents, last = name.split('.')
  block = config
  for parent in parents:
    block = block[parent]
  block[last] = value
  with pytest.raises(run_config.ConfigError, match=re.escape(message)):
    run_config.parse(config)


def test_the_seed_recipe_has_no_stabiliser_and_the_stable_one_adds_only_them(
    config):
  seed = flax.traverse_util.flatten_dict(dataclasses.asdict(
      run_config.parse(config)), sep='.')
  stable = flax.traverse_util.flatten_dict(dataclasses.asdict(
      run_config.parse(creative_stable.get_config())), sep='.')
  stabilisers = ('optim.ema_decay', 'loss.r1_weight',
                 'loss.disc_label_smoothing', 'loss.balance_per_pair')
  assert all(not seed[name] for name in stabilisers)
  assert {name for name in seed if seed[name] != stable[name]} == {
      'optim.ema_decay', 'optim.disc_learning_rate', 'loss.balance_per_pair',
      'optim.lr_schedule', 'optim.warmup_steps'}
  assert stable['optim.disc_learning_rate'] < seed['optim.disc_learning_rate']
  assert (seed['optim.lr_schedule'], stable['optim.lr_schedule']) == (
      'constant', 'cosine')
  demo_optim = run_config.parse(demo.get_config()).optim
  assert demo_optim.ema_decay > 0.0
  assert demo_optim.lr_schedule == 'constant'


def test_training_needs_data_and_a_workdir(config):
  with pytest.raises(run_config.ConfigError, match='config.data.dir is empty'):
    run_config.for_training(config, 'workdir')
  config.data.dir = '/data'
  with pytest.raises(run_config.ConfigError, match='no workdir'):
    run_config.for_training(config, '')
  assert run_config.for_training(config, 'workdir').data.dir == '/data'


def test_the_typed_config_follows_the_config_and_is_frozen(config):
  config.model.num_stages = 2
  config.model.compute_dtype = 'bfloat16'
  config.loss.gan_weight = 0  # an int where a float is declared
  typed = run_config.parse(config)
  assert (typed.model.num_stages, typed.model.num_layers,
          typed.model.dtype) == (2, 6, jnp.bfloat16)
  assert typed.loss.gan_weight == 0.0 and type(typed.loss.gan_weight) is float
  assert run_config.parse(creative.get_config()).model.dtype == jnp.float32
  with pytest.raises(dataclasses.FrozenInstanceError):
    typed.model.num_stages = 3
  with pytest.raises(run_config.ConfigError, match='config.model.typo is not'):
    run_config.parse({**config.to_dict(), 'model': {
        **config.model.to_dict(), 'typo': 1}})
  with pytest.raises(run_config.ConfigError,
                     match="config.num_frames must be int, not '12'"):
    run_config.parse({**config.to_dict(), 'num_frames': '12'})


def test_configs_recorded_by_older_versions_get_the_fields_they_had(
    config, tmp_path):
  run_dir.record_config(tmp_path, run_config.parse(config))
  assert run_dir.read_config(tmp_path) == run_config.parse(config)
  old = json.loads((tmp_path / run_dir.CONFIG_FILE).read_text())
  for block, name in (('model', 'remat'), ('model', 'disc_dropout'),
                      ('loss', 'overlap_weight'), ('optim', 'disc_b1')):
    del old[block][name]
  data = old.pop('data')  # its fields were at the top, without one
  old.update(data_dir=data['dir'], window_hop=data['window_hop'],
             shuffle_targets=data['shuffle_targets'],
             prefetch_batches=data['prefetch_batches'])
  (tmp_path / run_dir.CONFIG_FILE).write_text(json.dumps(old))
  upgraded = run_dir.read_config(tmp_path)
  assert upgraded.data.dir == data['dir']
  assert upgraded.data.normalise_latents  # they normalised
  assert upgraded.model.remat == 'none' and upgraded.model.disc_dropout == 0.3
  assert upgraded.loss.overlap_weight == 10.0  # the published code's
  assert upgraded.optim.disc_b1 == 0.9  # optax's default then
  del old['model']['num_layers']  # there from the first version on
  (tmp_path / run_dir.CONFIG_FILE).write_text(json.dumps(old))
  with pytest.raises(run_config.ConfigError,
                     match=r'config.json: config.model.num_layers is missing'):
    run_dir.read_config(tmp_path)


def test_changes_that_alter_checkpoints_are_told_apart(config, tmp_path):
  run_dir.record_config(tmp_path, run_config.parse(config))
  config.model.num_layers = 2
  config.optim.learning_rate = 5e-4
  changes = run_dir.config_changes(tmp_path, run_config.parse(config))
  assert changes == {'model.num_layers': (6, 2),
                     'optim.learning_rate': (1e-4, 5e-4)}
  assert run_dir.checkpoint_changes(changes) == {'model.num_layers': (6, 2)}
  gan = {'loss.gan_weight': (0.1, 0.2)}
  assert not run_dir.checkpoint_changes(gan)  # the GAN stays
  gan = {'loss.gan_weight': (0.1, 0.0)}
  assert run_dir.checkpoint_changes(gan) == gan  # the GAN goes
  ema = {'optim.ema_decay': (0.0, 0.999)}
  assert run_dir.checkpoint_changes(ema) == ema  # the average comes
  assert not run_dir.checkpoint_changes({'optim.ema_decay': (0.99, 0.999)})


def test_a_field_is_added_in_one_place(monkeypatch, tmp_path):
  """One declaration gives the default config, the override's check, the
  value of older records and the checkpoint policy."""
  extended = dataclasses.make_dataclass(
      'Config', [('warmup_steps', int, field(
          100, minimum=0, changes_checkpoints=True, recorded_before=0))],
      bases=(run_config.Config,), frozen=True)
  old = run_config.parse(creative.get_config())
  run_dir.record_config(tmp_path, old)  # written before the field existed
  monkeypatch.setattr(run_config, 'Config', extended)
  config = run_config.default_config()
  assert config.warmup_steps == 100
  config.warmup_steps = 500  # as --config.warmup_steps=500 would
  assert run_config.parse(config).warmup_steps == 500
  assert run_dir.read_config(tmp_path).warmup_steps == 0  # recorded_before
  changes = run_dir.config_changes(tmp_path, run_config.parse(config))
  assert changes == {'warmup_steps': (0, 500)}
  assert run_dir.checkpoint_changes(changes) == changes
  config.warmup_steps = -1
  with pytest.raises(run_config.ConfigError,
                     match='config.warmup_steps must not be negative'):
    run_config.parse(config)
