"""What the commands share: only their own messages (libraries' INFO and
Orbax's chatter off unless --verbosity asks), one line per expected error."""

import sys

from absl import app
from absl import flags
from absl import logging

from jingle_jax import checkpoints


def main_for(program: str, run, errors=(), takes_arguments=False):
  """An absl main that runs `run`.

  `run(flags.FLAGS)` does the work, or `run(flags.FLAGS, arguments)` when
  the program takes_arguments besides flags; a ValueError, OSError,
  CheckpointError or one of `errors` ends the program with
  'PROGRAM: error: MESSAGE'.
  """
  def main(argv):
    checkpoints.quiet_orbax()
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    if len(argv) > 1 and not takes_arguments:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
      run(flags.FLAGS, *([argv[1:]] if takes_arguments else []))
    except (ValueError, OSError, checkpoints.CheckpointError, *errors) as e:
      sys.exit(f'{program}: error: {e}')

  return main
