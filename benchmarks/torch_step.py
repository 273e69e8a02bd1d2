"""The original's training step in PyTorch, timed: the GAN discriminator's
AdamW update, then the generator's, as the PyTorch training loop does them,
at the shapes of a jingle_jax.bench preset on this machine's CPU, with
EnCodec's decoder (seeded random weights) in the step when
configs/creative.py's loss, changed by --loss, weights audio terms.

  python benchmarks/torch_step.py --preset cpu-small [--loss FIELD=VALUE ...]

The model is the PyTorch reference the parity tests check against
(tests/torch_reference.py).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

from configs import creative
from jingle_jax import bench
from jingle_jax import cli
from jingle_jax.config import run_config
from precompute import encodec_weights

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'tests'))
import torch_reference  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(bench.PRESETS),
                      default='cpu-small')
  parser.add_argument('--steps', type=int, default=10,
                      help='timed steps after one warm-up step')
  parser.add_argument('--loss', action='append', default=[],
                      metavar='FIELD=VALUE', help='a config.loss weight')
  args = parser.parse_args()
  config = creative.get_config()
  bench.PRESETS[args.preset].apply(config)
  for setting in args.loss:
    field, value = setting.split('=')
    config.loss[field] = float(value)
  config = run_config.parse(config)
  decode = None
  if config.loss.uses_audio:
    decoder = encodec_weights.random_model(0).decoder.requires_grad_(False)
    decode = lambda latents: decoder(latents).squeeze(1)
  torch.manual_seed(config.seed)
  model, discriminator, optimizer, disc_optimizer = torch_reference.from_config(config)
  shape = (config.per_device_batch_size, config.model.latent_dim,
           config.num_frames)
  inputs, targets = torch.randn(shape), torch.randn(shape)
  times = []
  for _ in range(args.steps + 1):
    start = time.perf_counter()
    torch_reference.training_step(model, discriminator, optimizer, disc_optimizer, inputs,
                                  targets, config, decode)
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times[1:])
  print(json.dumps({
      'preset': args.preset,
      'torch': torch.__version__,
      'threads': torch.get_num_threads(),
      'audio_terms': [name for name, weight in
                      config.loss.audio_weights.items() if weight],
      'batch_size': shape[0],
      'num_frames': shape[2],
      'pairs_per_s': round(shape[0] / step_s, 3),
      'median_step_ms': round(1e3 * step_s, 2),
      'timed_steps': args.steps,
  }))


if __name__ == '__main__':
  cli.set_torch_environment()
  main()
