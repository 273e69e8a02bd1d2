"""A training run's directory: its layout, its rules, and the two ways in.

  WORKDIR/config.json     the run's config (run_config.Config), recorded
                          when training opens the workdir
  WORKDIR/checkpoints/    Orbax checkpoints (jingle_jax/training/checkpoints.py)
  WORKDIR/metrics.jsonl   the metrics (jingle_jax/training/run_log.py)
  WORKDIR/tensorboard/    TensorBoard's events
  WORKDIR/train.lock      held by the run that writes (workdir_lock.py)

`open_for_training` is the way in for training (and for converting an
original checkpoint into a new workdir); `load` the way in for inference,
which may read a workdir that is being trained. The rules:
- a config that would give the checkpoints other shapes or another meaning
  (a field declared with changes_checkpoints) is refused before anything is
  written; other changes are returned, for the log;
- a config recorded before a field existed reads as the field's
  recorded_before value (run_config.parse);
- checkpoints of older layouts restore converted: each stage's layers
  apart (layers_0, ...: written before the layers ran as one scan), AdamW's
  moments per parameter (before the optimisers ran flat).
"""

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil

from absl import logging
import jax

from jingle_jax.config import run_config
from jingle_jax.config.fields import flat
from jingle_jax.core import files
from jingle_jax.core import parallel
from jingle_jax.models.cascade import stack_layers
from jingle_jax.models.cascade import unstack_layers
from jingle_jax.training import checkpoints
from jingle_jax.training import optimizers
from jingle_jax.training import train_step
from jingle_jax.training import workdir_lock
from jingle_jax.training.checkpoints import CheckpointError
from jingle_jax.training.checkpoints import CheckpointExtras

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
__all__ = ['CheckpointError', 'CheckpointExtras', 'TrainingRun', 'load',
           'open_for_training', 'read_config']


def read_config(workdir) -> run_config.Config:
  """WORKDIR/config.json, fields added since it was written filled in."""
  path = os.path.join(workdir, CONFIG_FILE)
  values = files.read_json(path, run_config.ConfigError, 'recorded config',
                           f'; is {workdir} a training workdir?')
  try:
    return run_config.parse(values)
  except run_config.ConfigError as e:
    raise run_config.ConfigError(f'{path}: {e}') from None


def record_config(workdir, config) -> None:
  """Writes WORKDIR/config.json (process 0 only)."""
  if jax.process_index() == 0:
    files.write_text(os.path.join(workdir, CONFIG_FILE), json.dumps(
        dataclasses.asdict(config), indent=2, sort_keys=True) + '\n')


def config_changes(workdir, config) -> dict:
  """{field: (recorded, requested)} against WORKDIR/config.json, if any."""
  if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    return {}
  old, new = flat(read_config(workdir)), flat(config)
  return {name: (old[name][0], value) for name, (value, _) in new.items()
          if old[name][0] != value}


def checkpoint_changes(changed: dict) -> dict:
  """The `changed` fields ({field: (old, new)}) that give checkpoints other
  shapes or another meaning."""
  declared = flat(run_config.Config())
  refused = {}
  for name, (old, new) in changed.items():
    rule = declared[name][1].metadata['changes_checkpoints']
    if rule is True or (callable(rule) and rule(old, new)):
      refused[name] = old, new
  return refused


def abstract_state(config, sharding=None, *, stacked_layers=True,
                   flat_optimizers=True):
  """TrainState shapes and dtypes placed like `sharding` (default: device 0),
  in today's layout or an older one (stacked_layers=False: layers apart;
  flat_optimizers=False: AdamW per parameter)."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(
      functools.partial(train_step.create_train_state, config),
      jax.random.key(0))
  if not flat_optimizers:
    shapes = shapes.replace(**jax.eval_shape(lambda state: {
        'opt_state': optimizers.per_leaf_state(state.params),
        'disc_opt_state': optimizers.per_leaf_state(state.disc_params)},
                                             shapes))
  if not stacked_layers:
    shapes = jax.eval_shape(unstack_layers, shapes)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      shapes)


def _layout(stored) -> dict:
  """abstract_state's layout arguments of a checkpoint of `stored` shapes."""
  return {'stacked_layers': not any(
      re.search(r'/cascade_stages_\d+/layers_\d+/', path) for path in stored),
          'flat_optimizers': not any(path.startswith('opt_state/1/0/')
                                     for path in stored)}


def _layout_of(config, sharding):
  """checkpoints.restore's layout_of for this config: the abstract state of
  a checkpoint's layout, and the conversion of its state into today's."""
  today = abstract_state(config, sharding)

  def to_today(layout, state):
    if not layout['stacked_layers']:
      state = stack_layers(state)
    if not layout['flat_optimizers']:
      tx, disc_tx = optimizers.make_optimizers(config.optim)
      state = state.replace(
          opt_state=optimizers.from_per_leaf(tx, state.params,
                                             state.opt_state),
          disc_opt_state=optimizers.from_per_leaf(
              disc_tx, state.disc_params, state.disc_opt_state))
    logging.info('a checkpoint of an older layout (%s): converted', layout)
    return jax.tree.map(lambda x, like: jax.device_put(x, like.sharding),
                        state, today)

  def layout_of(stored):
    layout = _layout(stored or {})
    if all(layout.values()):
      return today, lambda state: state
    return (abstract_state(config, sharding, **layout),
            functools.partial(to_today, layout))

  return layout_of


@dataclasses.dataclass
class TrainingRun:
  """A workdir opened for training: its config recorded, its checkpoints."""
  path: str
  config: run_config.Config
  changes: dict  # {field: (recorded, requested)}: allowed, to be logged
  manager: object  # the checkpoints' Orbax manager
  lock: int | None  # workdir_lock's, held until close

  @property
  def metrics_path(self) -> str:
    return os.path.join(self.path, METRICS_FILE)

  @property
  def tensorboard_dir(self) -> str:
    return os.path.join(self.path, TENSORBOARD_DIR)

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.path, CHECKPOINT_DIR)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, sharding=None):
    """(state, CheckpointExtras) of the latest readable checkpoint, one that
    cannot be read moved aside; None for a new run."""
    if self.latest_step() is None:
      return None
    return checkpoints.restore(self.manager, 'latest',
                               _layout_of(self.config, sharding),
                               move_aside=True)

  def save(self, state, extras: CheckpointExtras) -> None:
    """Starts saving checkpoint extras.data_position; DiskFull when its
    filesystem lacks the room, or an earlier save found it full."""
    step = extras.data_position
    with self._full_disk_named(step):
      needed = checkpoints.size(state)  # compression only lowers it
      if parallel.process_0_says(shutil.disk_usage(self.checkpoint_dir).free < needed):
        raise files.disk_full(self.checkpoint_dir, f'checkpoint {step}',
                              needed)
      checkpoints.save(self.manager, state, extras)

  def log_room(self, state) -> None:
    """Says how many checkpoints like `state`'s the filesystem has room
    for: a warning when fewer than the run keeps."""
    size = checkpoints.size(state)
    free = shutil.disk_usage(self.checkpoint_dir).free
    fits, kept = free // size, self.config.keep_checkpoints + 1
    (logging.warning if fits < kept else logging.info)(
        '%s free in %s: room for %d checkpoints of %s (the run keeps %d)',
        files.megabytes(free), self.checkpoint_dir, fits,
        files.megabytes(size), kept)

  @contextlib.contextmanager
  def _full_disk_named(self, step):
    """A full filesystem met in Orbax's writes as one DiskFull, the
    checkpoint being written discarded and the earlier ones kept."""
    try:
      yield
    except files.DiskFull:
      self._discard_unfinished()
      raise
    except Exception as e:  # pylint: disable=broad-except
      if not files.is_disk_full(e):
        raise
      self._discard_unfinished()
      raise files.disk_full(self.checkpoint_dir,
                            f'checkpoint {step} or the one before') from None

  def _discard_unfinished(self) -> None:
    if jax.process_index() == 0:
      for name in os.listdir(self.checkpoint_dir):
        if checkpoints.UNFINISHED in name:
          shutil.rmtree(os.path.join(self.checkpoint_dir, name),
                        ignore_errors=True)

  def close(self) -> None:
    """Waits for the saves in flight, then closes."""
    try:
      with self._full_disk_named(self.manager.latest_step()):
        self.manager.wait_until_finished()
        self.manager.check_for_errors()
    finally:
      self.manager.close()
      workdir_lock.release(self.lock)


def open_for_training(workdir, config, *, new=False) -> TrainingRun:
  """The workdir of a training run, locked against a second writer: refuses
  another run's workdir, a config that would change what its checkpoints
  hold, or with `new` any checkpoint at all (before writing anything), then
  records the config and opens the checkpoints."""
  lock = workdir_lock.acquire(workdir)
  try:
    changes = _allowed_changes(workdir, config, new)
    record_config(workdir, config)
    manager = checkpoints.open_manager(os.path.join(workdir, CHECKPOINT_DIR),
                                       keep=config.keep_checkpoints)
  except BaseException:
    workdir_lock.release(lock)
    raise
  return TrainingRun(workdir, config, changes, manager, lock)


def _allowed_changes(workdir, config, new: bool) -> dict:
  """The config's changes against the recorded one; CheckpointError when
  the checkpoints there forbid them (or, with `new`, any checkpoint)."""
  changes = config_changes(workdir, config)
  refused = checkpoint_changes(changes)
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  has_checkpoints = os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))
  if new and has_checkpoints:
    raise CheckpointError(f'{directory} holds checkpoints already; choose a '
                          'new workdir')
  if refused and has_checkpoints:
    listed = ', '.join(f'{name} {before!r} -> {after!r}'
                       for name, (before, after) in refused.items())
    raise CheckpointError(
        f'{directory} holds checkpoints of another model ({listed}): use a '
        'new --workdir, or the recorded values; changes that keep what a '
        'checkpoint holds (e.g. optim.learning_rate, num_train_steps) are '
        'allowed and logged')
  return changes


def load(workdir, which='best', *, sharding=None):
  """(recorded config, state, CheckpointExtras) of checkpoint `which`
  ('best', 'latest' or a step) of a workdir, for inference; writes
  nothing."""
  config = read_config(workdir)
  manager = checkpoints.open_manager(os.path.join(workdir, CHECKPOINT_DIR),
                                     keep=config.keep_checkpoints,
                                     read_only=True)
  try:
    state, extras = checkpoints.restore(manager, which,
                                        _layout_of(config, sharding))
  finally:
    manager.close()
  return config, state, extras


def checkpoint_steps(workdir) -> list[int]:
  """The steps of a workdir's checkpoints, ascending, for choosing one;
  writes nothing."""
  manager = checkpoints.open_manager(os.path.join(workdir, CHECKPOINT_DIR),
                                     read_only=True)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()
