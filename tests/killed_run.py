"""A training run of train_config that SIGKILLs itself once checkpoint 4 is
on disk: a kill at a known point, whatever the machine's speed.

  python tests/killed_run.py WORKDIR DATA_DIR [FIELD=VALUE ...]

FIELD is a config path (loss.gan_weight), VALUE a Python literal. With
$PAUSE_AT set to a path, the run writes PATH.paused there instead of dying
and goes on once PATH exists: a run held at a known point. With $FULL_AT
set to a step, saving that checkpoint finds the disk full instead (after
Orbax has begun it; no kill), where no small filesystem can be mounted.
"""

import ast
import errno
import os
import signal
import time

from jingle_jax import cli
from jingle_jax import train
from jingle_jax.training import checkpoints
import train_config

KILLED_AFTER = 4


def main(workdir, data_dir, *overrides):
  save = checkpoints.save

  def save_then_die(manager, state, extras):
    full_at = os.environ.get('FULL_AT')
    if full_at and extras.data_position == int(full_at):
      os.makedirs(os.path.join(manager.directory, f'{extras.data_position}'
                               f'{checkpoints.UNFINISHED}-1'))
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    save(manager, state, extras)
    if extras.data_position == KILLED_AFTER and not full_at:
      manager.wait_until_finished()
      pause_at = os.environ.get('PAUSE_AT')
      if not pause_at:
        os.kill(os.getpid(), signal.SIGKILL)
      with open(pause_at + '.paused', 'w', encoding='utf-8'):
        pass
      while not os.path.exists(pause_at):
        time.sleep(0.05)

  checkpoints.save = save_then_die
  config = train_config.get_config()
  config.data.dir = data_dir
  for override in overrides:
    field, value = override.split('=', 1)
    *parents, name = field.split('.')
    block = config
    for parent in parents:
      block = block[parent]
    block[name] = ast.literal_eval(value)
  train.train_and_evaluate(config, workdir)


if __name__ == '__main__':
  # As the train command runs: its errors in one line.
  cli.run('jingle_jax.train', lambda flag_values, arguments: main(*arguments),
          takes_arguments=True, logs_info=True)
