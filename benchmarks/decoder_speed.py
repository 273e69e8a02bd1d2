"""EnCodec's decoder in JAX against EnCodec's PyTorch decoder, same run.

  python -m benchmarks.decoder_speed [--batch-sizes 1,16] [--repeats 3] \
      [--backward] [--dtype float32|bfloat16] [--remat]

Decodes batches of 16 s clips (1,200 frames) of seeded random latents with
seeded random EnCodec weights (speed does not depend on the weights) and
prints, per batch size, the median seconds per batch of each decoder and
the real-time factor (seconds of audio per second). PyTorch runs on the CPU;
JAX on its default backend. --backward also times JAX's forward + backward
(the vector-Jacobian product wrt the latents, as the audio losses need it)
and prints XLA's planned memory for it.
"""

import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import timing
from jingle_jax import cli
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.models import encodec_decoder
from precompute import encodec_weights
from precompute import jax_weights


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_list('batch-sizes', ['1', '16'],
                    'Clips of 16 s per decoder call.')
  flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement.')
  flags.DEFINE_bool('backward', False, 'Also time JAX forward + backward.')
  flags.DEFINE_bool('torch', True, 'Also time the PyTorch decoder.')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                    'JAX compute dtype.')
  flags.DEFINE_bool('remat', False, 'JAX: recompute each stage in the '
                    'backward pass.')


def run(flag_values):
  repeats = flag_values.repeats
  model = encodec_weights.random_model(0).eval()
  encodec_weights.device('cpu')  # precompute's CPU tuning
  params = jax.device_put(jax_weights.decoder_params(model))
  decoder = encodec_decoder.EncodecDecoder(jnp.dtype(flag_values.dtype),
                                           flag_values.remat)
  forward = jax.jit(decoder.apply)
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}; torch '
        f'{torch.__version__} on CPU with {torch.get_num_threads()} threads')
  for batch_size in map(int, flag_values['batch-sizes'].value):
    clips = 4 * np.random.default_rng(0).normal(
        size=(batch_size, encodec_decoding.CHUNK_FRAMES, latents.LATENT_DIM)
    ).astype(np.float32)
    audio_seconds = (batch_size * encodec_decoding.CHUNK_FRAMES /
                     latents.FRAME_RATE)
    inputs = jax.device_put(clips)
    start = time.perf_counter()
    forward.lower({'params': params}, inputs).compile()
    compile_seconds = time.perf_counter() - start
    rows = [('jax', timing.median_seconds(
        lambda: forward({'params': params}, inputs).block_until_ready(),
        repeats))]
    if flag_values.torch:
      batch = torch.from_numpy(clips).transpose(1, 2)

      def torch_decode():
        with torch.inference_mode():
          model.decoder(batch)

      rows.append(('pytorch', timing.median_seconds(torch_decode, repeats)))
    if flag_values.backward:
      def loss(z):
        return jnp.sum(decoder.apply({'params': params}, z) ** 2)

      gradient = jax.jit(jax.grad(loss))
      compiled = gradient.lower(inputs).compile()
      planned = compiled.memory_analysis()
      rows.append(('jax fwd+bwd', timing.median_seconds(
          lambda: gradient(inputs).block_until_ready(), repeats)))
      if planned is not None:
        print(f'  fwd+bwd planned memory: temp '
              f'{planned.temp_size_in_bytes / 2**30:.2f} GiB, arguments '
              f'{planned.argument_size_in_bytes / 2**30:.2f} GiB')
    print(f'batch {batch_size} x 16 s ({flag_values.dtype}; jax compile '
          f'{compile_seconds:.1f} s):')
    timing.print_rates(rows, audio_seconds)


if __name__ == '__main__':
  cli.run('benchmarks.decoder_speed', run, define_flags, logs_info=True)
