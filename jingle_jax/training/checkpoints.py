"""Orbax checkpoints of a TrainState in one folder (training/run_dir.py
owns the folder and decides what is restored).

  <step>/state    the TrainState: generator, spectral-norm vectors,
                  discriminator, both optimisers
  <step>/extras   JSON: CheckpointExtras and a CRC-32 per state leaf
  <step>/metrics  JSON {val_loss}, on checkpoints saved after a validation

<step> is the data position, so it grows even when updates are skipped. The
`keep` newest checkpoints are kept, and the one with the lowest validation
loss besides. Saves are asynchronous; Orbax commits a checkpoint by renaming
its temporary directory, so a killed run leaves no half checkpoint under a
step name. The checksum catches what Orbax does not: restored bytes that
differ from the saved ones (a damaged disk, a partly overwritten file). A
checkpoint that cannot be read may be moved aside, to <step>.unreadable
(never deleted), so that a rerun can save that step again.
"""

import dataclasses
import os
import zlib

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jingle_jax.core import errors
from jingle_jax.core import orbax_quiet
from jingle_jax.core import parallel

UNREADABLE_SUFFIX = '.unreadable'


class CheckpointError(errors.UserError, RuntimeError):
  """No usable checkpoint; the message names the directory or step."""


@dataclasses.dataclass(frozen=True)
class CheckpointExtras:
  """What a checkpoint holds besides the state."""
  data_position: int  # batches consumed: the checkpoint's step
  rng: jax.Array  # the run's key
  updates: int = 0  # updates applied (skipped steps do not count)
  val_loss: float | None = None  # of a validation just before, if any
  best_val_loss: float | None = None  # early stopping's best so far
  evals_since_best: int = 0  # validations since it

  def to_json(self, state) -> dict:
    return {'step': self.updates, 'data_position': self.data_position,
            'rng': np.asarray(jax.random.key_data(self.rng)).tolist(),
            'val_loss': self.val_loss, 'best_val_loss': self.best_val_loss,
            'evals_since_best': self.evals_since_best,
            'checksum': _checksum(state)}

  @classmethod
  def from_json(cls, values, state) -> 'CheckpointExtras':
    """The extras of a restored `state`; CheckpointError when its bytes do
    not match the checksum. Checkpoints written before early stopping was
    kept have none of it."""
    if _checksum(state) != values['checksum']:
      raise CheckpointError('the restored state does not match its checksum')
    return cls(data_position=values['data_position'],
               rng=jax.random.wrap_key_data(
                   jnp.asarray(values['rng'], jnp.uint32)),
               updates=values['step'], val_loss=values.get('val_loss'),
               best_val_loss=values.get('best_val_loss'),
               evals_since_best=values.get('evals_since_best', 0))


def _checksum(state) -> list[int]:
  """CRC-32 of every leaf's bytes (the leaves are replicated)."""
  return [zlib.crc32(np.ascontiguousarray(leaf))
          for leaf in jax.tree.leaves(parallel.host_values(state))]


def _val_loss(metrics) -> float:
  return metrics['val_loss']


# In the folder name of a checkpoint that Orbax has not finished writing.
UNFINISHED = '.orbax-checkpoint-tmp'


def size(state) -> int:
  """Bytes a checkpoint of `state` takes, about: its arrays'."""
  return sum(leaf.nbytes for leaf in jax.tree.leaves(state)
             if hasattr(leaf, 'nbytes'))


def open_manager(directory, *, keep: int = 1,
                 read_only=False) -> ocp.CheckpointManager:
  """The manager of the checkpoints in `directory`, keeping the `keep`
  newest and the best (creates the folder unless read-only)."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=_val_loss, best_mode='min', preservation_policy=policy,
      create=not read_only, read_only=read_only,
      save_interval_steps=0 if read_only else 1,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager, state, extras: CheckpointExtras) -> None:
  """Starts an asynchronous save of `state` at step extras.data_position.

  Every process calls it. extras.val_loss ranks the checkpoint for 'best'.
  """
  val_loss = extras.val_loss
  manager.save(
      extras.data_position,
      metrics=None if val_loss is None else {'val_loss': float(val_loss)},
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          extras=ocp.args.JsonSave(extras.to_json(state))))


def _restore_step(manager, step, abstract):
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      extras=ocp.args.JsonRestore()))
  state = restored['state']
  return state, CheckpointExtras.from_json(restored['extras'], state)


def shapes(tree) -> dict:
  """{'params/cascade_stages_0/...': shape} of a state or its metadata."""
  return {'/'.join(str(getattr(key, 'key', getattr(key, 'name', getattr(
      key, 'idx', key)))) for key in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _stored_shapes(directory, step):
  """{path: shape} of checkpoint `step`'s state, or None when its metadata
  cannot be read (the restore then says why)."""
  try:  # `directory` is the manager's, an etils Path
    return shapes(ocp.StandardCheckpointHandler().metadata(
        directory / str(step) / 'state'))
  except Exception:  # pylint: disable=broad-except
    return None


def _shape_mismatch(stored, abstract):
  """Why a checkpoint of `stored` shapes holds other arrays than `abstract`;
  None when they match or are unknown."""
  if stored is None:
    return None
  wanted = shapes(abstract)
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


def _candidates(manager, which) -> list[int]:
  """The steps to try, in order, for 'latest', 'best' or a step number."""
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f'{manager.directory}: no checkpoint')
  if which == 'latest':
    return steps
  if which == 'best':
    best = manager.best_step()
    if best is None:  # e.g. a converted checkpoint, or before any validation
      logging.info('%s: no checkpoint has a validation loss; the latest '
                   'stands for the best', manager.directory)
      best = steps[0]
    return [best] + [step for step in steps if step != best]
  if isinstance(which, int) and which in steps:
    return [which]
  raise CheckpointError(f'{manager.directory}: no checkpoint {which!r}; '
                        f'steps: {sorted(steps)}')


def restore(manager, which, layout_of, *, move_aside=False):
  """(TrainState, CheckpointExtras) of checkpoint `which`: 'latest', 'best'
  (lowest validation loss; the latest when none has one) or a step number.

  layout_of(stored shapes or None) -> (abstract state to restore, function
  that turns it into today's state). A checkpoint that cannot be read is
  passed over for the next older one ('latest' and 'best'); with
  move_aside (training), it is renamed to <step>.unreadable first. A
  checkpoint of other shapes than the layout's is a CheckpointError at once:
  the config is at fault, not it.
  """
  manager.reload()
  failures, moved = [], False
  try:
    for step in _candidates(manager, which):
      stored = _stored_shapes(manager.directory, step)
      abstract, to_current = layout_of(stored)
      mismatch = _shape_mismatch(stored, abstract)
      if mismatch:
        raise CheckpointError(f'{manager.directory}/{step}: {mismatch}')
      try:
        with orbax_quiet.failed_reads_held():
          state, extras = _restore_step(manager, step, abstract)
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
      return to_current(state), extras
    raise CheckpointError(f'{manager.directory}: no readable checkpoint'
                          f'{" (moved aside)" if moved else ""}:\n  ' +
                          '\n  '.join(failures))
  finally:
    if moved:  # every process sees the renamed directories from here on
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('checkpoints moved aside')
      manager.reload()
