"""A training run of train_config that SIGKILLs itself once checkpoint 4 is
on disk: a kill at a known point, whatever the machine's speed.

  python tests/killed_run.py WORKDIR DATA_DIR [FIELD=VALUE ...]

FIELD is a config path (loss.gan_weight), VALUE a Python literal.
"""

import ast
import os
import signal
import sys

from jingle_jax import train
from jingle_jax.training import checkpoints
import train_config

KILLED_AFTER = 4


def main(workdir, data_dir, *overrides):
  save = checkpoints.save

  def save_then_die(manager, state, extras):
    save(manager, state, extras)
    if extras.data_position == KILLED_AFTER:
      manager.wait_until_finished()
      os.kill(os.getpid(), signal.SIGKILL)

  checkpoints.save = save_then_die
  config = train_config.get_config()
  config.data_dir = data_dir
  for override in overrides:
    field, value = override.split('=', 1)
    *parents, name = field.split('.')
    block = config
    for parent in parents:
      block = block[parent]
    block[name] = ast.literal_eval(value)
  train.train_and_evaluate(config, workdir)


if __name__ == '__main__':
  main(*sys.argv[1:])
