"""The PyTorch reference's training step, used to time the original."""

import json
import os
import subprocess
import sys

import torch

import torch_reference as reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_training_step_updates_both_models_with_training_noise(tiny_config):
  torch.manual_seed(0)
  model, discriminator, optimizer, disc_optimizer = reference.from_config(
      tiny_config)
  assert disc_optimizer.defaults['betas'] == (0.5, 0.999)
  modules = {'model': model, 'discriminator': discriminator}
  before = {f'{prefix}.{name}': parameter.detach().clone()
            for prefix, module in modules.items()
            for name, parameter in module.named_parameters()}
  inputs, targets = torch.randn(2, 16, 24), torch.randn(2, 16, 24)
  reference.training_step(model, discriminator, optimizer, disc_optimizer,
                          inputs, targets, tiny_config)
  after = {f'{prefix}.{name}': parameter
           for prefix, module in modules.items()
           for name, parameter in module.named_parameters()}
  for name, parameter in after.items():
    # The style discriminator is in no loss, as in the original.
    frozen = name.startswith('model.creative_agent.discriminator.')
    assert torch.equal(parameter, before[name]) == frozen, name
  # Anti-cheating noise of std 0.9 * std(x), in training only.
  x = torch.randn(4, 16, 500)
  noise = model.train().noisy(x) - x
  assert abs(noise.std().item() / x.std().item() - 0.9) < 0.02
  assert torch.equal(model.eval().noisy(x), x)


def test_timing_prints_one_json_line():
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'torch_step.py'),
       '--preset', 'cpu-small', '--steps', '1',
       '--loss', 'spectral_outlier_weight=0'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
  line = json.loads(result.stdout)
  assert line['batch_size'] == 4 and line['num_frames'] == 300
  assert line['audio_terms'] == []  # the decoder's step: test_audio_losses
  assert line['pairs_per_s'] > 0 and line['timed_steps'] == 1
