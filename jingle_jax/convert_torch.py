"""Imports an original Jingle_D PyTorch checkpoint (DESIGN.md section 7).

  python -m jingle_jax.convert_torch CHECKPOINT.pt \
      --config configs/creative.py --out-dir W \
      [--steps-per-epoch N | --config.data.dir=LATENTS] [--allow-pickle]

writes a new training workdir W (see jingle_jax/training/run_dir.py) whose one
checkpoint training resumes from and sampling uses. Its step is the epochs
the checkpoint completed (its 0-based `epoch` + 1) times the steps per epoch,
given or counted from the training pairs of config.data.dir. Both AdamW
states come along when the checkpoint has them (`optimizer_state_dict`,
`disc_optimizer_state_dict`: step count, first and second moments), so that
training resumes with the original's moments; otherwise they start fresh.

The conversion is jingle_jax.training.torch_checkpoint's; this module
imports torch only inside load_torch_checkpoint.
"""

import dataclasses

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from jingle_jax import cli
from jingle_jax.config import run_config
from jingle_jax.data import input_pipeline
from jingle_jax.data import latents
from jingle_jax.training import run_dir
from jingle_jax.training import torch_checkpoint
from jingle_jax.training.torch_checkpoint import ConversionError


def load_torch_checkpoint(path, *, allow_pickle=False):
  """The checkpoint dict with every tensor as a float32 numpy array."""
  import pickle  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  try:
    checkpoint = torch.load(path, map_location='cpu',
                            weights_only=not allow_pickle)
  except pickle.UnpicklingError as e:
    raise ConversionError(
        f'{path}: holds pickled objects besides tensors ({e}); pass '
        '--allow-pickle if you trust the file') from None
  if not isinstance(checkpoint, dict):
    raise ConversionError(f'{path}: a {type(checkpoint).__name__}, not a '
                          'checkpoint dict')

  def to_numpy(value):
    if isinstance(value, torch.Tensor):
      return value.detach().float().numpy()
    if isinstance(value, dict):  # in order: it is the parameters' order
      return {key: to_numpy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
      return type(value)(to_numpy(item) for item in value)
    return value

  return to_numpy(checkpoint)


def completed_epochs(checkpoint, source) -> int:
  """Epochs done: the 0-based `epoch` of the last one trained, plus one.

  The original saves checkpoint_epoch_{N}.pt with epoch = N - 1.
  """
  epoch = checkpoint.get('epoch')
  if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
    raise ConversionError(f'{source}: epoch is {epoch!r}, not a 0-based '
                          'epoch index')
  return epoch + 1


def train_steps_per_epoch(config) -> int:
  """Full global batches in an epoch of config.data.dir on these devices."""
  pairs = input_pipeline.dataset_pairs(
      config.data, config.num_frames, latents.LatentDataset(config.data.dir),
      'train')
  return input_pipeline.steps_per_epoch(
      len(pairs), config.per_device_batch_size * jax.device_count())


def write_workdir(workdir, config, state, *, step: int) -> None:
  """Saves `state` as checkpoint `step` of a new training workdir.

  The rng is the one a fresh training run draws from config.seed. No
  validation loss is recorded: the original's was measured on audio. Orbax
  commits the checkpoint atomically, so an interrupted run leaves none and a
  rerun starts over.
  """
  training_run = run_dir.open_for_training(workdir, config, new=True)
  try:
    training_run.save(
        state.replace(step=jnp.asarray(step, jnp.int32)),
        run_dir.CheckpointExtras(
            data_position=step, updates=step,
            rng=jax.random.split(jax.random.key(config.seed))[1]))
  finally:
    training_run.close()


def define_flags():
  """The command line (defined only when run as a program)."""
  config_flags.DEFINE_config_file(
      'config', None, "Training config; the checkpoint's keys override the "
      'architecture fields they fix.')
  flags.DEFINE_string('out-dir', None, 'New training workdir to write '
                      '(config.json, checkpoints/).')
  flags.DEFINE_integer(
      'steps-per-epoch', None, "Training steps per epoch, to turn the "
      "checkpoint's epoch into a step; default: the full global batches of "
      "config.data.dir's training pairs on this machine's devices.",
      lower_bound=1)
  flags.DEFINE_bool('allow-pickle', False, 'Also read checkpoints holding '
                    'pickled Python objects (trusted files only: loading '
                    'them runs code).')


def run(flag_values, arguments):
  if len(arguments) != 1:
    raise app.UsageError('expected one argument: the CHECKPOINT.pt file')
  path, out_dir = arguments[0], flag_values['out-dir'].value
  checkpoint = load_torch_checkpoint(
      path, allow_pickle=flag_values['allow-pickle'].value)
  given = run_config.parse(flag_values.config)
  config, state = torch_checkpoint.convert(checkpoint, given, path)
  steps_per_epoch = flag_values['steps-per-epoch'].value
  if steps_per_epoch is None:
    if not config.data.dir:
      raise ConversionError("pass --steps-per-epoch or --config.data.dir to "
                            "turn the checkpoint's epoch into a step")
    steps_per_epoch = train_steps_per_epoch(config)
  step = completed_epochs(checkpoint, path) * steps_per_epoch
  write_workdir(out_dir, config, state, step=step)
  overrides = ''.join(
      f' --config.model.{name}={value}'
      for name, value in dataclasses.asdict(config.model).items()
      if value != getattr(given.model, name))
  logging.info('%s (best_val_loss %s, on audio) -> %s, step %d; resume with '
               'python -m jingle_jax.train --config CONFIG --workdir %s%s',
               path, checkpoint.get('best_val_loss'), out_dir, step, out_dir,
               overrides)


if __name__ == '__main__':
  cli.run('jingle_jax.convert_torch', run, define_flags, logs_info=True,
          required=['config', 'out-dir'], takes_arguments=True)
