"""Trains the creative agent on cached latents, over every device and host.

  python -m jingle_jax.train --config configs/creative.py [--workdir DIR] \
      [--config.data.dir=LATENTS] [--config.FIELD=VALUE ...]

A rerun with the same workdir resumes from its latest checkpoint; SIGTERM or
SIGINT saves one and exits cleanly. Several hosts join through
jax.distributed: by themselves under srun (SLURM), mpirun (Open MPI) or on a
TPU pod, or given --coordinator_address, --num_processes and --process_id.
The workdir (jingle_jax/training/run_dir.py) holds config.json,
checkpoints/, metrics.jsonl and tensorboard/; the loop is
jingle_jax/training/loop.py.
"""

from absl import flags
from ml_collections import config_flags

from jingle_jax import cli
from jingle_jax.config import run_config
from jingle_jax.core import parallel
from jingle_jax.training import loop


def train_and_evaluate(config, workdir):
  """Trains until num_train_steps, early stopping or a signal.

  `config`: an ml_collections config (configs/*.py), checked here.
  Returns the last validation metrics (None if none ran).
  """
  training = loop.TrainingLoop(run_config.for_training(config, workdir),
                               workdir)
  try:
    return training.run()
  finally:
    training.close()


def define_flags():
  """The command line (defined only when run as a program)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.')
  flags.DEFINE_string(
      'workdir', None, 'Checkpoints and logs; default: config.workdir.')
  flags.DEFINE_string(
      'coordinator_address', None,
      'HOST:PORT of process 0, for multi-host runs outside SLURM, MPI or TPU '
      'pods.')
  flags.DEFINE_integer(
      'num_processes', None, 'Processes of the run (with '
      'coordinator_address).')
  flags.DEFINE_integer(
      'process_id', None, 'This process, 0..num_processes-1.')


def run(flag_values):
  parallel.initialize(flag_values.coordinator_address,
                      flag_values.num_processes, flag_values.process_id)
  train_and_evaluate(flag_values.config,
                     flag_values.workdir or flag_values.config.workdir)


if __name__ == '__main__':
  cli.run('jingle_jax.train', run, define_flags, required=['config'],
          logs_info=True)
