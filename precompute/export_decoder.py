"""EnCodec's PyTorch decoder -> the torch-free weights file of a dataset.

  python -m precompute.export_decoder --manifest L/manifest.json \
      [--encodec-checkpoint PATH | --random-encodec SEED]

writes L/decoder.msgpack (jingle_jax.inference.encodec_decoding) for a latent
dataset encoded before precompute.encode wrote it, and records it in the
manifest. The weights are the ones the manifest records, as
precompute.torch_decode takes them; other weights are refused (the
conversion: precompute/jax_weights.py).
"""

import dataclasses
import os

from absl import flags
from jingle_jax import cli
from jingle_jax.data import latents
from precompute import jax_weights
from precompute import encodec_weights


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('manifest', None, 'manifest.json of the latent dataset.')
  cli.define_encodec_flags(device=False)


def run(flag_values):
  dataset = latents.LatentDataset(flag_values.manifest)
  model = encodec_weights.matching_weights(
      dataset, flag_values['encodec-checkpoint'].value,
      flag_values['random-encodec'].value)
  directory = os.path.dirname(dataset.manifest_path)
  name = jax_weights.export(directory, model,
                                dataset.manifest.encodec_weights)
  dataclasses.replace(dataset.manifest, decoder=name).write(
      dataset.manifest_path)
  print(os.path.join(directory, name))


if __name__ == '__main__':
  cli.run('precompute.export_decoder', run, define_flags,
          required=['manifest'], runs_torch=True)
