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
"""

import functools
import json
import os
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jingle_jax import latents
from jingle_jax import parallel
from jingle_jax import train_step

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'


class CheckpointError(RuntimeError):
  """No usable checkpoint; the message names the directory or step."""


def _flat(tree, prefix=''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flat(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


def record_config(workdir, config) -> None:
  """Writes WORKDIR/config.json (process 0 only), saying what changed."""
  if jax.process_index() != 0:
    return
  text = config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    old = dict(_flat(read_config(workdir).to_dict()))
    new = dict(_flat(json.loads(text)))
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k) != new.get(k))
    if changed:
      logging.warning('%s: the config differs from the recorded one in %s',
                      path, ', '.join(changed))
  latents.write_text_atomic(path, text)


def read_config(workdir) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise CheckpointError(f'{path}: no recorded config; is {workdir} a '
                          'training workdir?') from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{path}: not valid JSON: {e}') from None


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


def abstract_state(config, sharding=None):
  """TrainState shapes and dtypes placed like `sharding` (default: device 0)."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(
      functools.partial(train_step.create_train_state, config),
      jax.random.key(0))
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      shapes)


def _restore_step(manager, config, step, sharding):
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state(config, sharding)),
      extras=ocp.args.JsonRestore()))
  state, extras = restored['state'], dict(restored['extras'])
  if _checksum(state) != extras.pop('checksum'):
    raise CheckpointError(f'{manager.directory}/{step}: the restored state '
                          'does not match its checksum')
  extras['rng'] = jax.random.wrap_key_data(
      jnp.asarray(extras['rng'], jnp.uint32))
  return state, extras


def restore(manager, config, which='latest', *, sharding=None):
  """(TrainState, extras {step, data_position, rng, val_loss}).

  which: 'latest' (falls back to older checkpoints when the newest cannot be
  read), 'best' (lowest validation loss; the latest when none has one) or a
  step number.
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
      candidates = steps
    else:
      candidates = [best]
  elif isinstance(which, int) and which in steps:
    candidates = [which]
  else:
    raise CheckpointError(f'{manager.directory}: no checkpoint {which!r}; '
                          f'steps: {sorted(steps)}')
  failures = []
  for step in candidates:
    try:
      return _restore_step(manager, config, step, sharding)
    except Exception as e:  # pylint: disable=broad-except
      # TensorStore errors run to pages; their first line says enough.
      failures.append(f'step {step}: {type(e).__name__}: '
                      f'{str(e).splitlines()[0][:300]}')
      logging.warning('checkpoint %s/%d cannot be read (%s)%s',
                      manager.directory, step, failures[-1],
                      '; trying the previous one' if step != candidates[-1]
                      else '')
  raise CheckpointError(f'{manager.directory}: no readable checkpoint:\n  ' +
                        '\n  '.join(failures))


def load_for_inference(workdir, which='best'):
  """(config, TrainState on device 0, step) from a training workdir."""
  config = read_config(workdir)
  manager = open_manager(workdir, config, read_only=True)
  try:
    state, extras = restore(manager, config, which)
  finally:
    manager.close()
  return config, state, extras['step']
