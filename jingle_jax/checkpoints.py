"""Training checkpoints: an Orbax CheckpointManager over the workdir.

Layout of a workdir:

  WORKDIR/config.json                the run's config (jingle_jax.run_config)
  WORKDIR/checkpoints/<step>/state   the TrainState: generator, spectral-norm
                                     vectors, discriminator, both optimisers
  WORKDIR/checkpoints/<step>/extras  JSON: step, data_position (batches
                                     consumed), rng (key data), val_loss,
                                     checksum (CRC-32 per state leaf)
  WORKDIR/checkpoints/<step>/metrics JSON {val_loss}, on checkpoints saved
                                     right after a validation

<step> is the data position, so it grows even when updates are skipped. The
`keep_checkpoints` newest checkpoints are kept, and the one with the lowest
validation loss besides. Saves are asynchronous; Orbax commits a checkpoint by
renaming its temporary directory, so a killed run leaves no half checkpoint
under a step name. The checksum catches what Orbax does not: restored bytes
that differ from the saved ones (a damaged disk, a partly overwritten file).

A checkpoint that cannot be read is moved aside by training, to
WORKDIR/checkpoints/<step>.unreadable (never deleted), so that the rerun can
save that step again; a config that would restore other shapes or give a
checkpoint another meaning (a field declared with changes_checkpoints) is
refused before anything is written.
"""

import functools
import os
import re
import zlib

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jingle_jax import optimizers
from jingle_jax import orbax_quiet
from jingle_jax import parallel
from jingle_jax import run_config
from jingle_jax import train_step
from jingle_jax.models.cascade import stack_layers
from jingle_jax.models.cascade import unstack_layers

CHECKPOINT_DIR = 'checkpoints'


class CheckpointError(RuntimeError):
  """No usable checkpoint; the message names the directory or step."""


UNREADABLE_SUFFIX = '.unreadable'


def has_checkpoints(workdir) -> bool:
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def refuse_checkpoint_changes(workdir, changes: dict) -> None:
  """CheckpointError when config `changes` ({field: (recorded, requested)})
  alter what the workdir's checkpoints hold: one line naming each such
  field and the ways out."""
  refused = run_config.checkpoint_changes(changes)
  if refused and has_checkpoints(workdir):
    listed = ', '.join(f'{name} {old!r} -> {new!r}'
                       for name, (old, new) in refused.items())
    raise CheckpointError(
        f'{os.path.join(workdir, CHECKPOINT_DIR)} holds checkpoints of '
        f'another model ({listed}): use a new --workdir, or the recorded '
        'values; changes that keep what a checkpoint holds (e.g. '
        'optim.learning_rate, num_train_steps) are allowed and logged')


def _checksum(state) -> list[int]:
  """CRC-32 of every leaf's bytes (the leaves are replicated)."""
  return [zlib.crc32(np.ascontiguousarray(leaf))
          for leaf in jax.tree.leaves(parallel.host_values(state))]


def _val_loss(metrics) -> float:
  return metrics['val_loss']


def open_manager(workdir, config, *, read_only=False) -> ocp.CheckpointManager:
  """The manager of WORKDIR/checkpoints; records the config unless read-only."""
  if not read_only:
    run_config.record(workdir, config)
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=config.keep_checkpoints),
      checkpoint_managers.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=_val_loss, best_mode='min', preservation_policy=policy,
      create=not read_only, read_only=read_only,
      save_interval_steps=0 if read_only else 1,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR), options=options)


def save(manager, state, *, data_position: int, rng, val_loss=None,
         force=False, **extra) -> None:
  """Starts an asynchronous save of `state` at step `data_position`.

  Every process calls it. `val_loss` ranks the checkpoint for 'best'; `extra`
  are more JSON values for the extras (restore returns them).
  """
  extras = {'step': int(parallel.host_values(state.step)),
            'data_position': int(data_position),
            'rng': np.asarray(jax.random.key_data(rng)).tolist(),
            'val_loss': val_loss,
            'checksum': _checksum(state),
            **extra}
  manager.save(
      data_position, force=force,
      metrics=None if val_loss is None else {'val_loss': float(val_loss)},
      args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                              extras=ocp.args.JsonSave(extras)))


def abstract_state(config, sharding=None, *, stacked_layers=True,
                   flat_optimizers=True):
  """TrainState shapes and dtypes placed like `sharding` (default: device 0).

  The layouts of older checkpoints: stacked_layers=False, written before
  each stage's layers ran as one scan (cascade.unstack_layers);
  flat_optimizers=False, before AdamW ran over flat arrays
  (optimizers.per_leaf_state).
  """
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


def _restore_step(manager, step, abstract):
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      extras=ocp.args.JsonRestore()))
  state, extras = restored['state'], dict(restored['extras'])
  if _checksum(state) != extras.pop('checksum'):
    raise CheckpointError('the restored state does not match its checksum')
  extras['rng'] = jax.random.wrap_key_data(
      jnp.asarray(extras['rng'], jnp.uint32))
  return state, extras


def _shapes(tree) -> dict:
  """{'params/cascade_stages_0/...': shape} of a state or its metadata."""
  return {'/'.join(str(getattr(key, 'key', getattr(key, 'name', getattr(
      key, 'idx', key)))) for key in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _stored_shapes(directory, step):
  """{path: shape} of checkpoint `step`'s state, or None when its metadata
  cannot be read (the restore then says why)."""
  try:  # `directory` is the manager's, an etils Path
    return _shapes(ocp.StandardCheckpointHandler().metadata(
        directory / str(step) / 'state'))
  except Exception:  # pylint: disable=broad-except
    return None


def _layout(stored) -> dict:
  """abstract_state's layout arguments of a checkpoint of `stored` shapes:
  each layer apart (layers_0, ...), written before the stages' layers ran
  as one scan; AdamW's moments per leaf, before it ran flat."""
  return {'stacked_layers': not any(
      re.search(r'/cascade_stages_\d+/layers_\d+/', path) for path in stored),
          'flat_optimizers': not any(path.startswith('opt_state/1/0/')
                                     for path in stored)}


def _current_layout(state, config, layout):
  """A state restored in an older `layout`, in today's."""
  if not layout['stacked_layers']:
    state = stack_layers(state)
  if not layout['flat_optimizers']:
    tx, disc_tx = optimizers.make_optimizers(config.optim)
    state = state.replace(
        opt_state=optimizers.from_per_leaf(tx, state.params, state.opt_state),
        disc_opt_state=optimizers.from_per_leaf(
            disc_tx, state.disc_params, state.disc_opt_state))
  return state


def _shape_mismatch(stored, abstract):
  """Why a checkpoint of `stored` shapes holds other arrays than `abstract`;
  None when they match or are unknown."""
  if stored is None:
    return None
  wanted = _shapes(abstract)
  problems = [f'stored shape {stored[path]} but the config asks for {shape} '
              f'in {path}' for path, shape in wanted.items()
              if path in stored and stored[path] != shape]
  problems += [f'no {path} stored' for path in wanted if path not in stored]
  problems += [f'{path} stored but not in the config' for path in stored
               if path not in wanted]
  if not problems:
    return None
  more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
  return (f'{problems[0]}{more}: the checkpoint was made with another '
          'config than this one')


def _move_aside(directory, step) -> str:
  """Renames checkpoint `step` to <step>.unreadable[.N]; the new path."""
  path = os.path.join(directory, str(step))
  target, count = path + UNREADABLE_SUFFIX, 1
  while os.path.exists(target):
    count += 1
    target = f'{path}{UNREADABLE_SUFFIX}.{count}'
  os.rename(path, target)
  return target


def restore(manager, config, which='latest', *, sharding=None,
            move_aside=False):
  """(TrainState, extras {step, data_position, rng, val_loss}).

  which: 'latest', 'best' (lowest validation loss; the latest when none has
  one) or a step number. A checkpoint that cannot be read is passed over for
  the next older one ('latest' and 'best'); with move_aside (training), it is
  renamed to <step>.unreadable first. A checkpoint of other shapes than the
  config's is a CheckpointError at once: the config is at fault, not it.
  """
  manager.reload()
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f'{manager.directory}: no checkpoint')
  if which == 'latest':
    candidates = steps
  elif which == 'best':
    best = manager.best_step()
    if best is None:  # e.g. a converted checkpoint, or before any validation
      logging.info('%s: no checkpoint has a validation loss; the latest '
                   'stands for the best', manager.directory)
      best = steps[0]
    candidates = [best] + [step for step in steps if step != best]
  elif isinstance(which, int) and which in steps:
    candidates = [which]
  else:
    raise CheckpointError(f'{manager.directory}: no checkpoint {which!r}; '
                          f'steps: {sorted(steps)}')
  abstract = abstract_state(config, sharding)
  older = functools.cache(lambda stacked_layers, flat_optimizers:
                          abstract_state(config, sharding,
                                         stacked_layers=stacked_layers,
                                         flat_optimizers=flat_optimizers))
  failures, moved = [], False
  try:
    for step in candidates:
      stored = _stored_shapes(manager.directory, step)
      layout = _layout(stored or {})
      current = all(layout.values())
      mismatch = _shape_mismatch(stored, abstract if current else
                                 older(**layout))
      if mismatch:
        raise CheckpointError(f'{manager.directory}/{step}: {mismatch}')
      try:
        with orbax_quiet.failed_reads_held():
          state, extras = _restore_step(
              manager, step, abstract if current else older(**layout))
      except Exception as e:  # pylint: disable=broad-except
        # TensorStore errors run to pages; their start says enough.
        reason = str(e).splitlines()[0].split(' See full TensorStore')[0]
        reason = f'{type(e).__name__}: {reason[:200]}'
        failures.append(f'step {step}: {reason}')
        aside = ''
        if move_aside and jax.process_index() == 0:
          aside = f'; moved to {_move_aside(manager.directory, step)}'
        moved |= move_aside
        logging.warning('checkpoint %s/%d cannot be read (%s)%s',
                        manager.directory, step, reason, aside)
        logging.debug('the error (--verbosity=1 shows this):', exc_info=True)
        continue
      if not current:
        logging.info('%s/%d has an older layout (%s): converted on restore',
                     manager.directory, step, layout)
        state = jax.tree.map(lambda x, like: jax.device_put(x, like.sharding),
                             _current_layout(state, config, layout), abstract)
      return state, extras
    raise CheckpointError(f'{manager.directory}: no readable checkpoint'
                          f'{" (moved aside)" if moved else ""}:\n  ' +
                          '\n  '.join(failures))
  finally:
    if moved:  # every process sees the renamed directories from here on
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('checkpoints moved aside')
      manager.reload()
