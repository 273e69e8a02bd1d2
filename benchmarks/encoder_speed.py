"""EnCodec's encoder in JAX against EnCodec's PyTorch encoder, same run.

  python -m benchmarks.encoder_speed [--batch-sizes 1,4] [--repeats 3] \
      [--notorch]

Encodes batches of 16 s chunks of seeded noise (the level of music) with
seeded random EnCodec weights (speed does not depend on the weights) and
prints, per batch size, the median seconds per batch of each encoder and
the real-time factor (seconds of audio per second). PyTorch runs on a CUDA
GPU when torch sees one, else on the CPU with precompute's tuning; JAX on
its default backend, the batch sharded over its devices as precompute
shards it.
"""

import time

from absl import flags
import jax
import numpy as np
import torch

from benchmarks import timing
from jingle_jax import cli
from jingle_jax.data import latents
from jingle_jax.inference import encodec_encoding
from precompute import encodec_weights
from precompute import jax_weights


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_list('batch-sizes', ['1', '4'],
                    'Chunks of 16 s per encoder call.')
  flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement.')
  flags.DEFINE_bool('torch', True, 'Also time the PyTorch encoder.')


def run(flag_values):
  model = encodec_weights.random_model(0).eval()
  device = encodec_weights.device('auto')
  model.to(device)
  params = jax_weights.encoder_params(model)
  chunk = encodec_encoding.CHUNK_SAMPLES
  print(f'jax {jax.__version__} on {jax.device_count()} x '
        f'{jax.devices()[0].device_kind}; torch {torch.__version__} on '
        f'{device} ({torch.get_num_threads()} CPU threads)')
  for batch_size in map(int, flag_values['batch-sizes'].value):
    encoder = encodec_encoding.JaxEncoder(params, batch_size)
    audio = (0.2 * np.random.default_rng(0).normal(
        size=batch_size * chunk)).astype(np.float32)
    audio_seconds = len(audio) / latents.SAMPLE_RATE
    start = time.perf_counter()
    np.asarray(encoder(audio, chunk))
    first_seconds = time.perf_counter() - start
    rows = [('jax', timing.median_seconds(
        lambda: np.asarray(encoder(audio, chunk)), flag_values.repeats))]
    if flag_values.torch:
      batch = torch.from_numpy(audio.reshape(batch_size, 1, chunk)).to(device)

      def torch_encode():
        with torch.inference_mode():
          model.encoder(batch).cpu()

      rows.append(('pytorch', timing.median_seconds(torch_encode,
                                                    flag_values.repeats)))
    print(f'batch {batch_size} x 16 s (jax first call, compiling: '
          f'{first_seconds:.1f} s):')
    timing.print_rates(rows, audio_seconds)


if __name__ == '__main__':
  cli.run('benchmarks.encoder_speed', run, define_flags, logs_info=True,
          runs_torch=True)
