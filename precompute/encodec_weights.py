"""The frozen EnCodec 24 kHz model: its weights, their identity, its device.

Weights come from one of three places: the pretrained checkpoint (encodec's
own download into torch hub's cache), a local checkpoint file (the same
state dict, e.g. encodec_24khz-d7cc33bc.th copied from a machine with
internet), or a seeded random initialisation for tests and demos only.
Their identity, recorded in the latent manifest, is 'sha256:<hex>' over the
state dict or 'random:<seed>'.

  python -m precompute.encodec_weights --check-pretrained

exits 0 when the pretrained weights can be loaded (cached or downloaded
now), 1 otherwise.
"""

import contextlib
import ctypes
import hashlib
import os
import socket
import sys
import warnings

from absl import app
from absl import flags
from absl import logging
from encodec import EncodecModel
import torch

from jingle_jax import cli
from jingle_jax.core import errors
from jingle_jax.data import latents

PRETRAINED_CHECKPOINT = 'encodec_24khz-d7cc33bc.th'
# Seconds a stalled download may wait for the network before it fails.
_DOWNLOAD_TIMEOUT = 60
# glibc mallopt parameters, and a threshold above EnCodec's largest
# activations (~50 MB per 16 s chunk).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_THRESHOLD = 1 << 30


class WeightsError(errors.UserError, RuntimeError):
  """EnCodec weights that cannot be loaded, or are not the ones expected."""


def identity(model) -> str:
  """'sha256:<hex>' over the state dict: sorted names and tensor bytes."""
  digest = hashlib.sha256()
  for name, tensor in sorted(model.state_dict().items()):
    digest.update(name.encode())
    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
  return 'sha256:' + digest.hexdigest()


def _encodec_24khz(pretrained: bool):
  with warnings.catch_warnings():
    # encodec 0.1.1 builds its convolutions with a deprecated torch helper.
    warnings.filterwarnings('ignore', '.*weight_norm.*', FutureWarning)
    return EncodecModel.encodec_model_24khz(pretrained=pretrained)


def random_model(seed: int):
  """Seeded random weights: not a codec, announced loudly."""
  torch.manual_seed(seed)
  model = _encodec_24khz(pretrained=False)
  for line in (
      '*' * 72,
      f'EnCodec weights are SEEDED RANDOM (seed {seed}), NOT the pretrained',
      'model: latents are not music features and decoded audio sounds like',
      'noise. For tests and demos only.',
      '*' * 72):
    logging.warning(line)
  return model


@contextlib.contextmanager
def _network_timeout(seconds):
  previous = socket.getdefaulttimeout()
  socket.setdefaulttimeout(seconds)
  try:
    yield
  finally:
    socket.setdefaulttimeout(previous)


def pretrained_model():
  """The pretrained weights from torch hub's cache, downloaded if needed."""
  try:
    with _network_timeout(_DOWNLOAD_TIMEOUT):
      return _encodec_24khz(pretrained=True)
  except Exception as e:  # pylint: disable=broad-except
    raise WeightsError(
        f'the pretrained EnCodec weights ({PRETRAINED_CHECKPOINT}) cannot be '
        f'loaded: {e}. Pass --encodec-checkpoint PATH (that file, downloaded '
        'elsewhere) or, for tests and demos only, --random-encodec SEED.'
    ) from e


def checkpoint_model(path):
  """Weights from a local checkpoint file holding the model's state dict."""
  model = _encodec_24khz(pretrained=False)
  try:
    model.load_state_dict(
        torch.load(path, map_location='cpu', weights_only=True))
  except Exception as e:  # pylint: disable=broad-except
    raise WeightsError(f'--encodec-checkpoint {path}: not an EnCodec 24 kHz '
                       f'state dict: {e}') from e
  return model


def load(checkpoint=None, random_seed=None):
  """(model in eval mode, identity) of the weights the flags name; the
  pretrained weights when neither is given."""
  if checkpoint is not None and random_seed is not None:
    raise WeightsError('pass --encodec-checkpoint or --random-encodec, '
                       'not both')
  if random_seed is not None:
    return (random_model(random_seed).eval(),
            f'{latents.RANDOM_WEIGHTS}{random_seed}')
  model = (pretrained_model() if checkpoint is None
           else checkpoint_model(checkpoint))
  return model.eval(), identity(model)


def device(name: str) -> torch.device:
  """The torch device of --device auto|cpu|cuda, tuned when it is the CPU."""
  if name not in ('auto', 'cpu', 'cuda'):
    raise WeightsError(f'--device {name}: expected auto, cpu or cuda')
  if name == 'cuda' and not torch.cuda.is_available():
    raise WeightsError('--device cuda: torch sees no CUDA GPU')
  if name == 'cuda' or (name == 'auto' and torch.cuda.is_available()):
    return torch.device('cuda')
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  if sys.platform == 'linux':
    # glibc gives every large freed buffer back to the system, so each conv
    # layer of each chunk pays its page faults again; keeping the buffers in
    # the heap cut the CPU time of encoding by ~40% on a 2-core CPU.
    with contextlib.suppress(OSError, AttributeError):
      libc = ctypes.CDLL('libc.so.6')
      libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_THRESHOLD)
      libc.mallopt(_M_TRIM_THRESHOLD, _MALLOC_THRESHOLD)
  return torch.device('cpu')


def matching_weights(dataset, checkpoint=None, random_seed=None):
  """The EnCodec model of the weights the dataset records (random ones from
  their seed when no weights are given); WeightsError for other weights."""
  recorded = dataset.manifest.encodec_weights
  if (checkpoint is None and random_seed is None
      and recorded.startswith(latents.RANDOM_WEIGHTS)):
    try:
      random_seed = int(recorded.removeprefix(latents.RANDOM_WEIGHTS))
    except ValueError:
      raise latents.LatentDataError(
          f'{dataset.manifest_path}: field \'encodec_weights\' is '
          f'{recorded!r}') from None
  model, loaded = load(checkpoint, random_seed)
  if loaded != recorded:
    raise WeightsError(
        f'{dataset.manifest_path} was encoded with EnCodec weights '
        f'{recorded}, but the weights given are {loaded}: refusing to '
        'decode with other weights than the encoder\'s')
  return model


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_bool(
      'check-pretrained', False,
      'Exit 0 when the pretrained weights can be loaded, 1 otherwise.')


def run(flag_values):
  if not flag_values['check-pretrained'].value:
    raise app.UsageError('nothing to do: pass --check-pretrained')
  pretrained_model()
  print('the pretrained EnCodec weights are available')


if __name__ == '__main__':
  cli.run('precompute.encodec_weights', run, define_flags, runs_torch=True)
