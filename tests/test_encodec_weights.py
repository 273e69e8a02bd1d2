"""EnCodec weights: sources, identities, and the errors that name flags."""

import os
import urllib.error

import pytest
import torch

from precompute import encodec_weights


def test_random_weights_are_seeded_and_announced(caplog):
  model, weights = encodec_weights.load(random_seed=7)
  assert weights == 'random:7'
  assert 'SEEDED RANDOM (seed 7)' in caplog.text
  again = encodec_weights.random_model(7)
  assert encodec_weights.identity(again) == encodec_weights.identity(model)
  assert not model.training


def test_checkpoint_identity_is_the_state_dict_hash(tmp_path):
  source = encodec_weights.random_model(3)
  path = tmp_path / 'encodec.th'
  torch.save(source.state_dict(), path)
  model, weights = encodec_weights.load(checkpoint=str(path))
  assert weights == encodec_weights.identity(source)
  assert weights.startswith('sha256:') and len(weights) == 7 + 64
  with torch.no_grad():
    next(model.parameters()).add_(1e-3)
  assert encodec_weights.identity(model) != weights


def test_unusable_weights_name_the_way_out(tmp_path, monkeypatch):
  bad = tmp_path / 'bad.th'
  torch.save({'encoder.nothing': torch.zeros(3)}, bad)
  with pytest.raises(encodec_weights.WeightsError, match=str(bad)):
    encodec_weights.load(checkpoint=str(bad))
  with pytest.raises(encodec_weights.WeightsError, match='not both'):
    encodec_weights.load(checkpoint=str(bad), random_seed=0)

  def offline(*args, **kwargs):
    raise urllib.error.URLError('Name or service not known')

  monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', offline)
  with pytest.raises(encodec_weights.WeightsError) as error:
    encodec_weights.load()
  for text in ('Name or service not known', '--encodec-checkpoint',
               '--random-encodec'):
    assert text in str(error.value)


def test_device_choice():
  torch.set_num_threads(1)
  assert encodec_weights.device('cpu') == torch.device('cpu')
  assert torch.get_num_threads() == len(os.sched_getaffinity(0))
  with pytest.raises(encodec_weights.WeightsError, match='--device gpu'):
    encodec_weights.device('gpu')
  if not torch.cuda.is_available():
    assert encodec_weights.device('auto') == torch.device('cpu')
    with pytest.raises(encodec_weights.WeightsError, match='no CUDA'):
      encodec_weights.device('cuda')
