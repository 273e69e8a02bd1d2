"""Training checkpoints: an Orbax CheckpointManager over the workdir.

Layout of a workdir:

  WORKDIR/config.json                the config of the run (by process 0)
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
checkpoint another meaning (CHECKPOINT_FIELDS) is refused before anything is
written.
"""

import contextlib
import functools
import gc
import io
import json
import logging as python_logging
import os
import re
import sys
import time
import zlib

from absl import logging
import flax.traverse_util
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jingle_jax import files
from jingle_jax import parallel
from jingle_jax import run_config
from jingle_jax import train_step
from jingle_jax.models.cascade import stack_layers
from jingle_jax.models.cascade import unstack_layers

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'


class CheckpointError(RuntimeError):
  """No usable checkpoint; the message names the directory or step."""


# Fields whose change gives a workdir's checkpoints other shapes or another
# meaning; training refuses them on a workdir that has checkpoints. Other
# fields (learning rates, steps, dropout, remat, ...) may change on resume.
CHECKPOINT_FIELDS = (
    'normalise_latents', 'model.latent_dim', 'model.num_stages',
    'model.num_layers', 'model.num_heads', 'model.use_creative_agent',
    'model.fixed_masking', 'model.hard_masks', 'model.mask_hidden',
    'model.mask_heads')
UNREADABLE_SUFFIX = '.unreadable'
# How long a failed restore's abandoned reads are given to end quietly.
_SETTLE_SECONDS = 0.5


def _fields(config) -> dict:
  """{'model.num_layers': 6, ...}: the config's values by dotted name."""
  return flax.traverse_util.flatten_dict(config.to_dict(), sep='.')


def config_changes(workdir, config) -> dict:
  """{field: (recorded, requested)} against WORKDIR/config.json, if any."""
  if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    return {}
  old, new = _fields(read_config(workdir)), _fields(config)
  return {name: (old.get(name), new.get(name))
          for name in sorted(old.keys() | new.keys())
          if old.get(name) != new.get(name)}


def refuse_checkpoint_changes(workdir, changes: dict) -> None:
  """CheckpointError when `changes` alter what the workdir's checkpoints
  hold: one line naming each such field and the ways out."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(directory) or not any(
      name.isdigit() for name in os.listdir(directory)):
    return
  refused = {name: values for name, values in changes.items()
             if name in CHECKPOINT_FIELDS}
  gan = changes.get('loss.gan_weight')
  if gan and (gan[0] == 0) != (gan[1] == 0):  # the discriminator comes or goes
    refused['loss.gan_weight'] = gan
  if refused:
    listed = ', '.join(f'{name} {old!r} -> {new!r}'
                       for name, (old, new) in refused.items())
    raise CheckpointError(
        f'{directory} holds checkpoints of another model ({listed}): use a '
        'new --workdir, or the recorded values; changes that keep what a '
        'checkpoint holds (e.g. optim.learning_rate, num_train_steps) are '
        'allowed and logged')


def record_config(workdir, config) -> None:
  """Writes WORKDIR/config.json (process 0 only)."""
  if jax.process_index() != 0:
    return
  files.write_text(
      os.path.join(workdir, CONFIG_FILE),
      config.to_json_best_effort(indent=2, sort_keys=True) + '\n')


def read_config(workdir) -> ml_collections.ConfigDict:
  """WORKDIR/config.json, with fields added since it was written filled in."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      return run_config.upgrade(ml_collections.ConfigDict(json.load(f)))
  except FileNotFoundError:
    raise CheckpointError(f'{path}: no recorded config; is {workdir} a '
                          'training workdir?') from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{path}: not valid JSON: {e}') from None


def _not_orbax_chatter(record) -> bool:
  if record.name == 'asyncio':  # the reads of a failed restore, abandoned
    return 'exception was never retrieved' not in record.getMessage()
  return (record.levelno >= python_logging.ERROR or
          '/orbax/' not in record.pathname)


def _orbax_abandoned_read(unraisable) -> bool:
  code = getattr(unraisable.object, 'cr_code', None)
  return code is not None and '/orbax/' in code.co_filename


def quiet_orbax() -> None:
  """Keeps Orbax's chatter out of the program's output.

  It reports every save and restore in pages of INFO, and warns of things
  that are so here (a read-only manager); the reads a failed restore
  abandons print pages when they end or are collected. What goes wrong with
  a checkpoint, this module reports itself, in one line.
  """
  logging.get_absl_handler().addFilter(_not_orbax_chatter)
  hook = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: (
      None if _orbax_abandoned_read(unraisable) else hook(unraisable))


def _checksum(state) -> list[int]:
  """CRC-32 of every leaf's bytes (the leaves are replicated)."""
  return [zlib.crc32(np.ascontiguousarray(leaf))
          for leaf in jax.tree.leaves(parallel.host_values(state))]


def _val_loss(metrics) -> float:
  return metrics['val_loss']


def open_manager(workdir, config, *, read_only=False) -> ocp.CheckpointManager:
  """The manager of WORKDIR/checkpoints; records the config unless read-only."""
  if not read_only:
    record_config(workdir, config)
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


def abstract_state(config, sharding=None, *, stacked_layers=True):
  """TrainState shapes and dtypes placed like `sharding` (default: device 0).

  stacked_layers=False: the layout of checkpoints written before each
  stage's layers ran as one scan (cascade.unstack_layers).
  """
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(
      functools.partial(train_step.create_train_state, config),
      jax.random.key(0))
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


def _unscanned_layers(stored) -> bool:
  """Whether a checkpoint holds each layer apart (layers_0, ...): written
  before the stages' layers ran as one scan."""
  return any(re.search(r'/cascade_stages_\d+/layers_\d+/', path)
             for path in stored)


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


@contextlib.contextmanager
def _quiet_failed_reads():
  """Keeps an abandoned restore's reads from printing pages.

  A failed Orbax restore leaves its pending TensorStore reads behind: each
  prints a page when it is collected ('Exception ignored in ...') and a
  traceback when it completes on the closed event loop. Within this
  context, what is printed is held back, and kept back when the restore
  failed, once its reads have been collected and have had time to end.
  """
  hook, stderr = sys.unraisablehook, sys.stderr
  sys.unraisablehook = lambda unraisable: None
  sys.stderr = held = io.StringIO()
  failed = True
  try:
    yield
    failed = False
  finally:
    if failed:
      gc.collect()
      time.sleep(_SETTLE_SECONDS)
    sys.unraisablehook, sys.stderr = hook, stderr
    if not failed:
      stderr.write(held.getvalue())


def _move_aside(directory, step) -> str:
  """Renames checkpoint `step` to <step>.unreadable[.N]; the new path."""
  path = os.path.join(directory, str(step))
  target, count = path + UNREADABLE_SUFFIX, 1
  while os.path.exists(target):
    count += 1
    target = f'{path}{UNREADABLE_SUFFIX}.{count}'
  os.rename(path, target)
  return target


def parse_which(text: str):
  """--checkpoint: 'best', 'latest' or a step number."""
  if text in ('best', 'latest'):
    return text
  try:
    return int(text)
  except ValueError:
    raise ValueError(f'--checkpoint must be best, latest or a step number, '
                     f'not {text!r}') from None


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
  unscanned_layout = functools.cache(functools.partial(
      abstract_state, config, sharding, stacked_layers=False))
  failures, moved = [], False
  try:
    for step in candidates:
      stored = _stored_shapes(manager.directory, step)
      unscanned = stored is not None and _unscanned_layers(stored)
      layout = unscanned_layout() if unscanned else abstract
      mismatch = _shape_mismatch(stored, layout)
      if mismatch:
        raise CheckpointError(f'{manager.directory}/{step}: {mismatch}')
      try:
        with _quiet_failed_reads():
          state, extras = _restore_step(manager, step, layout)
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
      if unscanned:
        logging.info('%s/%d holds each layer apart (written before the '
                     'layers were scanned): stacked on restore',
                     manager.directory, step)
        state = jax.tree.map(lambda x, like: jax.device_put(x, like.sharding),
                             stack_layers(state), abstract)
      return state, extras
    raise CheckpointError(f'{manager.directory}: no readable checkpoint'
                          f'{" (moved aside)" if moved else ""}:\n  ' +
                          '\n  '.join(failures))
  finally:
    if moved:  # every process sees the renamed directories from here on
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('checkpoints moved aside')
      manager.reload()
