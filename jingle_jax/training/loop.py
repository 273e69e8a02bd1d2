"""The training loop: a run set up from its config and workdir, then one
step after another, with validation, checkpoints and logs between them.

The step of a batch is the data position (batches consumed); a run resumed
at a checkpoint continues with the batch that follows it, so a killed and
resumed run computes what an uninterrupted one does.
"""

import dataclasses
import functools
import math
import time

from absl import logging
from flax.training import early_stopping as flax_early_stopping
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.core import compile_cache
from jingle_jax.core import errors
from jingle_jax.core import parallel
from jingle_jax.core import stop_signal
from jingle_jax.core import xla_options
from jingle_jax.data import input_pipeline
from jingle_jax.data import latent_space
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import media_log
from jingle_jax.training import audio_losses
from jingle_jax.training import run_dir
from jingle_jax.training import run_log
from jingle_jax.training import step_timing
from jingle_jax.training import train_step


class TooManySkippedSteps(errors.UserError, RuntimeError):
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


def compile_steps(config, mesh, rng, space, decoder=None, total_steps=None):
  """(train, evaluate), jitted over the mesh; train donates what the
  backend's compiler updates in place (train_step.donated_arguments) and
  schedules its learning rates over `total_steps`.

  Both take (state, batch, ...) with batches as the dataset stores them;
  `space` (latent_space.LatentSpace) and `decoder`
  (encodec_decoding.step_decoder) are bound.
  """
  replicated = parallel.replicated(mesh)
  split = parallel.data_sharding(mesh)
  rng_data = np.asarray(jax.random.key_data(rng))
  space, decoder = jax.device_put((space, decoder), replicated)

  def step(state, batch, position, space, decoder):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(rng_data),
                                  position)
    return train_step.train_step(state, batch, step_rng, space, decoder,
                                 config=config, total_steps=total_steps)

  train = xla_options.jit(parallel.on_mesh(step, mesh),
                          in_shardings=(replicated, split, replicated,
                                        replicated, replicated),
                          out_shardings=(replicated, replicated),
                          donate_argnums=train_step.donated_arguments())
  evaluate = xla_options.jit(
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
      size=config.data.prefetch_batches, sharding=split,
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


def epoch_line(position, schedule, train_metrics, val_metrics) -> str:
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


class TrainingLoop:
  """One training run: its data, compiled steps, state, checkpoints and logs,
  set up from a parsed config (run_config.for_training) and its workdir."""

  def __init__(self, config, workdir):
    self.config = config
    self.mesh = parallel.make_mesh()
    self.split = parallel.data_sharding(self.mesh)
    self.batch_size = config.per_device_batch_size * jax.device_count()
    # A bad dataset is refused before the workdir is opened.
    dataset, self.train_pairs, self.val_pairs = input_pipeline.training_pairs(
        config.data, config.num_frames, config.model.latent_dim,
        config.per_device_batch_size,
        audio_losses.weighted(config.loss, audio_losses.TARGET_TERMS))
    # Before anything is logged: a second run on the workdir is refused in
    # one line.
    self.training_run = run_dir.open_for_training(workdir, config)
    try:
      self._set_up(config, dataset)
    except BaseException:
      self.training_run.close()
      raise

  def _set_up(self, config, dataset) -> None:
    logging.info('compilation cache: %s',
                 compile_cache.use(config.compilation_cache) or 'off')
    self.schedule = Schedule.from_config(
        config, input_pipeline.steps_per_epoch(len(self.train_pairs),
                                               self.batch_size))
    logging.info('%d train / %d val pairs, %d steps per epoch of %d pairs on '
                 '%d devices', len(self.train_pairs), len(self.val_pairs),
                 self.schedule.steps_per_epoch, self.batch_size,
                 jax.device_count())
    self._init_or_restore()
    space = latent_space.LatentSpace.of(
        config.data.normalise_latents, dataset, config.model.latent_dim)
    decoder = encodec_decoding.step_decoder(config.loss, dataset, space)
    self.train, self.evaluate = compile_steps(
        config, self.mesh, self.rng, space, decoder,
        total_steps=self.schedule.num_train_steps)
    self.media = media_log.ValidationMedia(config, self.val_pairs, dataset,
                                           space, decoder)
    self.batches = input_pipeline.prefetch_to_devices(
        input_pipeline.train_batches(
            self.train_pairs, seed=config.seed,
            global_batch_size=self.batch_size,
            rows=parallel.local_rows(self.split, self.batch_size),
            start_step=self.position,
            shuffle_targets=config.data.shuffle_targets),
        size=config.data.prefetch_batches, sharding=self.split,
        global_batch_size=self.batch_size)
    self.log = run_log.RunLog(self.training_run.metrics_path,
                              self.training_run.tensorboard_dir,
                              start_step=self.position,
                              total_steps=self.schedule.num_train_steps)
    self._notes(decoder)
    self.last_saved, self.step_metrics, self.consecutive_skips = (
        self.position, [], 0)
    self.train_metrics = self.val_metrics = None
    self.timer = step_timing.StepTimer()

  def _init_or_restore(self) -> None:
    """The state, data position, rng and early stopping of a new or
    resumed run."""
    restored = self.training_run.restore(parallel.replicated(self.mesh))
    patience = self.config.early_stopping_patience
    if restored is None:
      init_rng, self.rng = jax.random.split(jax.random.key(self.config.seed))
      init_data = np.asarray(jax.random.key_data(init_rng))
      self.state = xla_options.jit(
          lambda: train_step.create_train_state(
              self.config, jax.random.wrap_key_data(init_data)),
          out_shardings=parallel.replicated(self.mesh))()
      self.position, self.stopping = 0, early_stopping(patience)
      return
    self.state, extras = restored
    logging.info('resumed from %s at step %d', self.training_run.checkpoint_dir,
                 extras.data_position)
    self.position, self.rng = extras.data_position, extras.rng
    self.stopping = early_stopping(patience, extras.best_val_loss,
                                   extras.evals_since_best)

  def _notes(self, decoder) -> None:
    """What the log says of the run before its first step."""
    if decoder is not None and audio_losses.weighted(
        self.config.loss, audio_losses.TARGET_TERMS):
      self.log.note(self.position, 'audio terms against the ' + (
          "target clips' waveforms" if self.train_pairs.target_audio else
          'decoded target: the dataset keeps no audio (precompute.encode '
          '--keep-audio keeps it)'))
    if jax.process_index() == 0:
      self.training_run.log_room(self.state)
    if self.training_run.changes:
      self.log.note(self.position, 'config changed from the recorded one: ' +
                    ', '.join(f'{name} {old!r} -> {new!r}' for name, (
                        old, new) in self.training_run.changes.items()))

  def _check_data(self) -> None:
    """The first data fault of the steps since the last log step, named."""
    found = first_fault([m['data_fault'] for m in self.step_metrics])
    if found is not None:
      index, fault = found
      raise self.train_pairs.fault_error(fault, *input_pipeline.step_pairs(
          self.position - len(self.step_metrics) + index,
          num_pairs=len(self.train_pairs), seed=self.config.seed,
          global_batch_size=self.batch_size,
          shuffle_targets=self.config.data.shuffle_targets))

  def _save(self, val_loss=None) -> None:
    self._check_data()  # no checkpoint follows a batch with a fault
    self.training_run.save(self.state, checkpoint_extras(
        self.state, self.position, self.rng, self.stopping, val_loss))
    self.last_saved = self.position

  def _log_window(self) -> None:
    """The train metrics of the steps since the last log step."""
    with self.timer.waiting_for_device():
      self.step_metrics = parallel.host_values(self.step_metrics)
    self._check_data()
    self.train_metrics = mean_train_metrics(self.step_metrics)
    self.train_metrics.update(self.timer.window(self.batch_size))
    self.log.write(self.position, 'train', self.train_metrics)
    try:
      self.consecutive_skips = count_skips(
          self.consecutive_skips, [m['skipped'] for m in self.step_metrics],
          self.config.max_consecutive_skips)
    except TooManySkippedSteps as e:
      last = self.training_run.latest_step()
      raise TooManySkippedSteps(
          f'by step {self.position}, {e}; the last good checkpoint is '
          f'{self.training_run.checkpoint_dir}/{last}') from None
    self.step_metrics = []

  def _validate(self) -> float:
    """The validation loss, its metrics logged, media and the best
    checkpoint written when due."""
    self.val_metrics = validate(self.evaluate, self.state, self.val_pairs,
                                self.config, self.mesh, self.batch_size)
    val_loss = self.val_metrics['loss']
    self.log.write(self.position, 'val', self.val_metrics)
    if self.media.due(self.position // self.schedule.eval_every):
      self.media.write(self.log, self.position, self.state)
    self.stopping = self.stopping.update(val_loss)
    if self.stopping.has_improved:
      self._save(val_loss)
    return val_loss

  def _step(self) -> bool:
    """One step and what follows it; whether it was a log step."""
    with self.timer.waiting_for_data():
      batch = next(self.batches)
    started = time.perf_counter()
    self.state, metrics = self.train(self.state, batch,
                                     np.int32(self.position))
    self.timer.dispatched(started, metrics)
    self.position += 1
    self.step_metrics.append(metrics)
    self.log.advance()
    schedule, position = self.schedule, self.position
    is_log_step = (position % self.config.log_every_steps == 0 or
                   position == schedule.num_train_steps)
    if is_log_step:
      self._log_window()
    val_loss = (self._validate() if position % schedule.eval_every == 0
                else None)
    if position % schedule.checkpoint_every == 0 and (
        self.last_saved != position):
      self._save(val_loss)
    if position % schedule.steps_per_epoch == 0:
      self.log.summary(epoch_line(position, schedule, self.train_metrics,
                                  self.val_metrics))
    if is_log_step or val_loss is not None:
      self.timer.restart()
    return is_log_step

  def run(self):
    """Trains until num_train_steps, early stopping or a signal; the last
    validation metrics (None if none ran)."""
    with stop_signal.StopSignal() as stop:
      while (self.position < self.schedule.num_train_steps and
             not self.stopping.should_stop):
        is_log_step = self._step()
        if (is_log_step or jax.process_count() == 1) and stop.requested():
          logging.warning('stopping at step %d on %s', self.position,
                          stop.received or "another process's signal")
          break
      if self.stopping.should_stop:
        logging.info('early stopping at step %d: no better validation loss '
                     'in %d validations', self.position,
                     self.config.early_stopping_patience)
      if self.last_saved != self.position:
        self._save()
    return self.val_metrics

  def close(self) -> None:
    """Stops the readers, finishes the saves in flight, closes the logs."""
    self.batches.close()
    self.training_run.close()
    self.log.close()
