"""Trains the creative agent on cached latents, over every device and host.

  python -m jingle_jax.train --config configs/creative.py [--workdir DIR] \
      [--config.data_dir=LATENTS] [--config.FIELD=VALUE ...]

A rerun with the same workdir resumes from its latest checkpoint; SIGTERM or
SIGINT saves one and exits cleanly. Several hosts join through
jax.distributed: by themselves under srun (SLURM), mpirun (Open MPI) or on a
TPU pod, or given --coordinator_address, --num_processes and --process_id.
The workdir (jingle_jax/run_dir.py) holds config.json, checkpoints/,
metrics.jsonl and tensorboard/.
"""

import dataclasses
import functools
import math
import signal
import time

from absl import flags
from absl import logging
from flax.training import early_stopping as flax_early_stopping
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np

from jingle_jax import audio_losses
from jingle_jax import cli
from jingle_jax import compile_cache
from jingle_jax import encodec_decoding
from jingle_jax import input_pipeline
from jingle_jax import latent_space
from jingle_jax import media_log
from jingle_jax import parallel
from jingle_jax import run_config
from jingle_jax import run_dir
from jingle_jax import run_log
from jingle_jax import step_timing
from jingle_jax import train_step

config_flags.DEFINE_config_file('config', None, 'Config file.')
flags.DEFINE_string(
    'workdir', None, 'Checkpoints and logs; default: config.workdir.')
flags.DEFINE_string(
    'coordinator_address', None,
    'HOST:PORT of process 0, for multi-host runs outside SLURM, MPI or TPU '
    'pods.')
flags.DEFINE_integer(
    'num_processes', None, 'Processes of the run (with coordinator_address).')
flags.DEFINE_integer(
    'process_id', None, 'This process, 0..num_processes-1.')

class TooManySkippedSteps(RuntimeError):
  """Too many steps in a row had a non-finite loss or gradient."""


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When things happen, in steps (batches consumed)."""
  steps_per_epoch: int
  num_train_steps: int
  eval_every: int
  checkpoint_every: int

  @classmethod
  def from_config(cls, config, steps_per_epoch):
    def steps(value, epochs):
      return value if value != -1 else epochs * steps_per_epoch
    return cls(steps_per_epoch,
               steps(config.num_train_steps, config.num_epochs),
               steps(config.eval_every_steps, 1),
               steps(config.checkpoint_every_steps,
                     config.checkpoint_every_epochs))


def compile_steps(config, mesh, rng, space, decoder=None):
  """(train, evaluate), jitted over the mesh; train donates its state.

  Both take (state, batch, ...) with batches as the dataset stores them;
  `space` (latent_space.LatentSpace) and `decoder`
  (encodec_decoding.for_training) are bound.
  """
  replicated = parallel.replicated(mesh)
  split = parallel.data_sharding(mesh)
  rng_data = np.asarray(jax.random.key_data(rng))
  space, decoder = jax.device_put((space, decoder), replicated)

  def step(state, batch, position, space, decoder):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(rng_data),
                                  position)
    return train_step.train_step(state, batch, step_rng, space, decoder,
                                 config=config)

  train = jax.jit(parallel.on_mesh(step, mesh),
                  in_shardings=(replicated, split, replicated, replicated,
                                replicated),
                  out_shardings=(replicated, replicated), donate_argnums=0)
  evaluate = jax.jit(
      parallel.on_mesh(functools.partial(train_step.eval_step, config=config),
                       mesh),
      in_shardings=(replicated, split, replicated, replicated),
      out_shardings=replicated)
  return (lambda state, batch, position: train(state, batch, position,
                                               space, decoder),
          lambda state, batch: evaluate(state, batch, space, decoder))


def mean_train_metrics(step_metrics):
  """Means over the steps that were not skipped; `skipped` is a count."""
  kept = [m for m in step_metrics if m['skipped'] == 0] or step_metrics
  means = {name: float(np.mean([m[name] for m in kept])) for name in kept[0]
           if name != 'data_fault'}
  means['skipped'] = float(sum(m['skipped'] for m in step_metrics))
  return means


def first_fault(faults):
  """(index, fault) of the first of the steps' data faults, or None."""
  for index, fault in enumerate(parallel.host_values(faults)):
    if fault[0] >= 0:
      return index, fault
  return None


def validate(evaluate, state, pairs, config, mesh, batch_size):
  """Eval-mode metrics over every matched pair: each batch's means (its
  repeats left out), weighted by the pairs it holds. A fault in the latents
  is a LatentDataError naming them."""
  split = parallel.data_sharding(mesh)
  batches = input_pipeline.prefetch_to_devices(
      input_pipeline.eval_batches(
          pairs, global_batch_size=batch_size,
          rows=parallel.local_rows(split, batch_size)),
      size=config.prefetch_batches, sharding=split,
      global_batch_size=batch_size)
  totals, faults = None, []
  for index, batch in enumerate(batches):
    count = min(batch_size, len(pairs) - index * batch_size)
    metrics = evaluate(state, batch)
    faults.append(metrics.pop('data_fault'))
    metrics = jax.tree.map(functools.partial(jnp.multiply, count), metrics)
    totals = metrics if totals is None else jax.tree.map(
        jnp.add, totals, metrics)
  if (found := first_fault(faults)) is not None:
    index, fault = found
    indices = list(input_pipeline.padded_batches(len(pairs),
                                                 batch_size))[index][0]
    raise pairs.fault_error(fault, indices, indices)
  return {name: float(value) / len(pairs)
          for name, value in parallel.host_values(totals).items()}


class StopSignal:
  """Within `with`, SIGTERM and SIGINT ask the loop to stop instead of killing.

  All processes must stop at the same step: with several, `requested` agrees
  through a collective, so call it at the same steps everywhere.
  """

  def __enter__(self):
    self.received = None  # the signal's name
    self._previous = {sig: signal.signal(sig, self._receive)
                      for sig in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _receive(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signum, self._previous[signum])  # a second one is not held

  def requested(self) -> bool:
    here = self.received is not None
    if jax.process_count() == 1:
      return here
    return bool(np.any(multihost_utils.process_allgather(np.int32(here))))

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def early_stopping(patience: int, best_val_loss=None, evals_since_best=0):
  """flax's EarlyStopping, stopping after `patience` validations in a row
  without a lower loss, as the original does (0: never).

  flax stops at the update after `patience` of them; hence patience - 1.
  """
  return flax_early_stopping.EarlyStopping(
      patience=patience - 1 if patience else math.inf,
      best_metric=math.inf if best_val_loss is None else best_val_loss,
      patience_count=evals_since_best,
      should_stop=bool(patience) and evals_since_best >= patience)


def checkpoint_extras(state, position, rng, stopping,
                      val_loss=None) -> run_dir.CheckpointExtras:
  """What a checkpoint keeps besides the state."""
  best = stopping.best_metric
  return run_dir.CheckpointExtras(
      data_position=position, rng=rng,
      updates=int(parallel.host_values(state.step)), val_loss=val_loss,
      best_val_loss=None if math.isinf(best) else float(best),
      evals_since_best=int(stopping.patience_count))


def count_skips(consecutive: int, skipped, limit: int) -> int:
  """Skipped steps in a row after the steps' `skipped` flags.

  Raises TooManySkippedSteps when the run reaches `limit`.
  """
  for flag in skipped:
    consecutive = consecutive + 1 if flag else 0
    if consecutive >= limit:
      raise TooManySkippedSteps(
          f'{consecutive} steps in a row had a non-finite loss or gradient '
          '(config.max_consecutive_skips)')
  return consecutive


def init_or_restore(config, mesh, training_run: run_dir.TrainingRun):
  """(state, data position, rng, early stopping) of a new or resumed run."""
  restored = training_run.restore(parallel.replicated(mesh))
  if restored is None:
    init_rng, rng = jax.random.split(jax.random.key(config.seed))
    init_data = np.asarray(jax.random.key_data(init_rng))
    state = jax.jit(
        lambda: train_step.create_train_state(
            config, jax.random.wrap_key_data(init_data)),
        out_shardings=parallel.replicated(mesh))()
    return state, 0, rng, early_stopping(config.early_stopping_patience)
  state, extras = restored
  logging.info('resumed from %s at step %d', training_run.checkpoint_dir,
               extras.data_position)
  stopping = early_stopping(config.early_stopping_patience,
                            extras.best_val_loss, extras.evals_since_best)
  return state, extras.data_position, extras.rng, stopping


def train_and_evaluate(config, workdir):
  """Trains until num_train_steps, early stopping or a signal.

  `config`: an ml_collections config (configs/*.py), checked here.
  Returns the last validation metrics (None if none ran).
  """
  config = run_config.for_training(config, workdir)
  logging.info('compilation cache: %s',
               compile_cache.use(config.compilation_cache) or 'off')
  mesh = parallel.make_mesh()
  split = parallel.data_sharding(mesh)
  batch_size = config.per_device_batch_size * jax.device_count()
  dataset, train_pairs, val_pairs = input_pipeline.training_pairs(
      config, batch_size)
  schedule = Schedule.from_config(config, input_pipeline.steps_per_epoch(
      len(train_pairs), batch_size))
  logging.info('%d train / %d val pairs, %d steps per epoch of %d pairs on '
               '%d devices', len(train_pairs), len(val_pairs),
               schedule.steps_per_epoch, batch_size, jax.device_count())

  training_run = run_dir.open_for_training(workdir, config)
  state, position, rng, stopping = init_or_restore(config, mesh,
                                                   training_run)
  space = latent_space.LatentSpace.of(config.normalise_latents, dataset,
                                      config.model.latent_dim)
  decoder = encodec_decoding.for_training(config.loss, dataset, space)
  train, evaluate = compile_steps(config, mesh, rng, space, decoder)
  media = media_log.ValidationMedia(config, val_pairs, dataset, space,
                                    decoder)
  batches = input_pipeline.prefetch_to_devices(
      input_pipeline.train_batches(
          train_pairs, seed=config.seed, global_batch_size=batch_size,
          rows=parallel.local_rows(split, batch_size), start_step=position,
          shuffle_targets=config.shuffle_targets),
      size=config.prefetch_batches, sharding=split,
      global_batch_size=batch_size)
  log = run_log.RunLog(training_run.metrics_path,
                       training_run.tensorboard_dir, start_step=position,
                       total_steps=schedule.num_train_steps)
  if decoder is not None and audio_losses.weighted(
      config.loss, audio_losses.TARGET_TERMS):
    log.note(position, 'audio terms against the ' + (
        "target clips' waveforms" if train_pairs.target_audio else
        'decoded target: the dataset keeps no audio (precompute.encode '
        '--keep-audio keeps it)'))
  if training_run.changes:
    log.note(position, 'config changed from the recorded one: ' + ', '.join(
        f'{name} {old!r} -> {new!r}'
        for name, (old, new) in training_run.changes.items()))
  last_saved, step_metrics, consecutive_skips = position, [], 0
  train_metrics = val_metrics = None
  timer = step_timing.StepTimer()

  def check_data():
    """The first data fault of the steps since the last log step, named."""
    found = first_fault([m['data_fault'] for m in step_metrics])
    if found is not None:
      index, fault = found
      raise train_pairs.fault_error(fault, *input_pipeline.step_pairs(
          position - len(step_metrics) + index, num_pairs=len(train_pairs),
          seed=config.seed, global_batch_size=batch_size,
          shuffle_targets=config.shuffle_targets))

  def save(val_loss=None):
    nonlocal last_saved
    check_data()  # no checkpoint follows a batch with a fault
    training_run.save(state, checkpoint_extras(state, position, rng,
                                               stopping, val_loss))
    last_saved = position

  try:
    with StopSignal() as stop:
      while position < schedule.num_train_steps and not stopping.should_stop:
        with timer.waiting_for_data():
          batch = next(batches)
        started = time.perf_counter()
        state, metrics = train(state, batch, np.int32(position))
        timer.dispatched(started, metrics)
        position += 1
        step_metrics.append(metrics)
        log.advance()
        is_log_step = (position % config.log_every_steps == 0 or
                       position == schedule.num_train_steps)
        if is_log_step:
          with timer.waiting_for_device():
            step_metrics = parallel.host_values(step_metrics)
          check_data()
          train_metrics = mean_train_metrics(step_metrics)
          train_metrics.update(timer.window(batch_size))
          log.write(position, 'train', train_metrics)
          try:
            consecutive_skips = count_skips(
                consecutive_skips, [m['skipped'] for m in step_metrics],
                config.max_consecutive_skips)
          except TooManySkippedSteps as e:
            raise TooManySkippedSteps(
                f'by step {position}, {e}; the last good checkpoint is '
                f'{training_run.checkpoint_dir}/'
                f'{training_run.latest_step()}') from None
          step_metrics = []
        val_loss = None
        if position % schedule.eval_every == 0:
          val_metrics = validate(evaluate, state, val_pairs, config, mesh,
                                 batch_size)
          val_loss = val_metrics['loss']
          log.write(position, 'val', val_metrics)
          if media.due(position // schedule.eval_every):
            media.write(log, position, state)
          stopping = stopping.update(val_loss)
          if stopping.has_improved:
            save(val_loss)
        if position % schedule.checkpoint_every == 0 and last_saved != position:
          save(val_loss)
        if position % schedule.steps_per_epoch == 0:
          log.summary(_epoch_line(position, schedule, train_metrics,
                                  val_metrics))
        if is_log_step or val_loss is not None:
          timer.restart()
        if (is_log_step or jax.process_count() == 1) and stop.requested():
          logging.warning('stopping at step %d on %s', position,
                          stop.received or "another process's signal")
          break
      if stopping.should_stop:
        logging.info('early stopping at step %d: no better validation loss '
                     'in %d validations', position,
                     config.early_stopping_patience)
      if last_saved != position:
        save()
  finally:
    batches.close()
    training_run.close()
    log.close()
  return val_metrics


def _epoch_line(position, schedule, train_metrics, val_metrics) -> str:
  epoch = position // schedule.steps_per_epoch
  epochs = -(-schedule.num_train_steps // schedule.steps_per_epoch)
  line = f'epoch {epoch}/{epochs} step {position}'
  if train_metrics:
    line += (f' | train loss {train_metrics["loss"]:.4f} complementarity '
             f'{train_metrics["complementarity"]:.1%} '
             f'{train_metrics["pairs_per_second"]:.1f} pairs/s, '
             f'{train_metrics["data_wait_fraction"]:.0%} waiting for data')
  if val_metrics:
    line += (f' | val loss {val_metrics["loss"]:.4f} complementarity '
             f'{val_metrics["complementarity"]:.1%} masks '
             f'{val_metrics["input_mask_mean"]:.3f}/'
             f'{val_metrics["target_mask_mean"]:.3f}')
  return line


def run(f):
  parallel.initialize(f.coordinator_address, f.num_processes, f.process_id)
  train_and_evaluate(f.config, f.workdir or f.config.workdir)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  cli.run('jingle_jax.train', run, logs_info=True, errors=(
      run_dir.CheckpointError, TooManySkippedSteps))
