"""What every command shares: absl's flags and main, Orbax's chatter off,
one line per expected error, and the flags several commands take. Light: it
imports no JAX, Orbax or torch.

A command module defines its flags in define_flags(), called only when it
runs as a program (so that tests import commands side by side), and ends
with

  if __name__ == '__main__':
    cli.run('jingle_jax.sample', run, define_flags, required=['workdir'])

where `run(flags.FLAGS)` does the work.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from jingle_jax.core import errors
from jingle_jax.core import orbax_quiet


# What PyTorch's OpenMP runtime reads when torch loads: idle threads that
# spin made the encoder 1.7x slower whenever the CPU was shared
# (docs/BENCHMARKS.md).
TORCH_ENVIRONMENT = {'OMP_WAIT_POLICY': 'PASSIVE'}


def set_torch_environment() -> None:
  """Sets the variables of TORCH_ENVIRONMENT the environment lacks; when
  torch, which reads them as it loads, is loaded already, runs the program
  again with them (os.execv), the same arguments and no other cost than its
  start."""
  missing = {name: value for name, value in TORCH_ENVIRONMENT.items()
             if name not in os.environ}
  os.environ.update(missing)
  if missing and 'torch' in sys.modules:
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def run(program: str, work, define_flags=None, *, required=(),
        takes_arguments=False, logs_info=False, runs_torch=False):
  """Defines the flags (`define_flags()`, those `required` marked so),
  parses them and runs `work` as `program`.

  `work(flags.FLAGS)` does the work, or `work(flags.FLAGS, arguments)` when
  the program takes_arguments besides flags. A ValueError, OSError or
  errors.UserError ends the program with 'PROGRAM: error: MESSAGE'.
  Libraries' INFO logs are shown when logs_info (the training's progress) or --verbosity
  asks for them. A program that runs_torch starts in TORCH_ENVIRONMENT.
  """
  if runs_torch:
    set_torch_environment()
  if define_flags is not None:
    define_flags()
  flags.mark_flags_as_required(required)

  def main(argv):
    orbax_quiet.install()
    if not logs_info and not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    if len(argv) > 1 and not takes_arguments:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
      work(flags.FLAGS, *([argv[1:]] if takes_arguments else []))
    except (ValueError, OSError, errors.UserError) as e:
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


def define_checkpoint_flags() -> None:
  """--workdir, --checkpoint and --data-dir: a trained model to load."""
  flags.DEFINE_string('workdir', None, 'Training workdir (has config.json).')
  flags.DEFINE_string('checkpoint', 'best', 'best, latest or a step number.')
  flags.DEFINE_string('data-dir', None, 'Latent dataset (its statistics, '
                      'pairs and EnCodec weights); default: the run\'s '
                      'config.data.dir.')


def define_pair_flags() -> None:
  """--split and --batch-size: the dataset pairs a trained model runs on."""
  flags.DEFINE_string('split', 'val', 'Dataset split whose pairs are used.')
  flags.DEFINE_integer('batch-size', 8, 'Pairs per model call.',
                       lower_bound=1)


def define_encodec_flags(*, device=True) -> None:
  """--encodec-checkpoint, --random-encodec and --device: EnCodec's weights
  in PyTorch, by default the ones a dataset's manifest records."""
  flags.DEFINE_string('encodec-checkpoint', None, 'Local EnCodec 24 kHz '
                      'state dict (default: what the manifest records; '
                      'precompute: the pretrained download).')
  flags.DEFINE_integer('random-encodec', None, 'Seed of random EnCodec '
                       'weights, for tests and demos (default: what the '
                       'manifest records).')
  if device:
    flags.DEFINE_string('device', 'auto', 'auto, cpu or cuda (EnCodec).')


def define_decode_flags() -> None:
  """--manifest, --out-dir, --song and --batch-size: latents to decode."""
  flags.DEFINE_string('manifest', None, 'manifest.json of the latent dataset '
                      'whose EnCodec weights decode.')
  flags.DEFINE_string('out-dir', None, 'Folder for the wav files.')
  flags.DEFINE_multi_string('song', [], 'Id of a dataset song to decode.')
  flags.DEFINE_integer('batch-size', 4, '16 s chunks per decoder call.',
                       lower_bound=1)
