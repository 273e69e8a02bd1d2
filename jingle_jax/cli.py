"""What every command shares: absl's flags and main, Orbax's chatter off,
one line per expected error. Light: it imports no JAX, Orbax or torch.

A command module ends with

  if __name__ == '__main__':
    cli.run('jingle_jax.sample', run)

where `run(flags.FLAGS)` does the work.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from jingle_jax import orbax_quiet


def run(program: str, work, *, errors=(), takes_arguments=False,
        logs_info=False):
  """Parses the flags and runs `work` as `program`.

  `work(flags.FLAGS)` does the work, or `work(flags.FLAGS, arguments)` when
  the program takes_arguments besides flags. A ValueError, OSError or one of
  `errors` ends the program with 'PROGRAM: error: MESSAGE'. Libraries' INFO
  logs are shown when logs_info (the training's progress) or --verbosity
  asks for them.
  """
  def main(argv):
    orbax_quiet.install()
    if not logs_info and not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    if len(argv) > 1 and not takes_arguments:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
      work(flags.FLAGS, *([argv[1:]] if takes_arguments else []))
    except (ValueError, OSError, *errors) as e:
      sys.exit(f'{program}: error: {e}')

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      sys.exit(f'{program}: error: {e}')
    except AttributeError as e:  # ml_collections' answer to --config.unknown
      field = str(e).strip('"\'')
      sys.exit(f'{program}: error: the config has no field {field!r} '
               '(--config.FIELD flags)')

  app.run(main, flags_parser=parse_flags)


def checkpoint_choice(text: str):
  """--checkpoint: 'best', 'latest' or a step number."""
  if text in ('best', 'latest'):
    return text
  try:
    return int(text)
  except ValueError:
    raise ValueError(f'--checkpoint must be best, latest or a step number, '
                     f'not {text!r}') from None
