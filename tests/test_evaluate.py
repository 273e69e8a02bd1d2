"""Evaluation metrics, the methods' models and the comparison table."""

import copy
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
from PIL import Image
import pytest

from jingle_jax import baselines
from jingle_jax import evaluate
from jingle_jax import latents
from jingle_jax import run_log
from jingle_jax import train
import test_sample
import train_config

T, D = 90, 8
CLIP = 300  # frames per clip of the trained checkpoint


def pulses(period, phase, seed):
  """[T, D] noise whose loudness pulses every `period` frames."""
  loud = (np.arange(T) - phase) % period < period // 2
  noise = np.random.default_rng(seed).normal(size=(T, D))
  return (noise * np.where(loud, 1.0, 0.1)[:, None]).astype(np.float32)


def test_envelope_is_the_smoothed_rms_over_channels():
  clip = np.zeros((T, D), np.float32)
  clip[40] = 5.0  # one loud frame: RMS 5 there, 0 elsewhere
  clip[:, 0] += 2.0 * np.sqrt(D)  # a constant floor: RMS 2 when alone
  expected_frame_rms = np.sqrt(np.mean(clip ** 2, axis=1))
  envelope = np.asarray(evaluate.envelope(clip))
  assert envelope.shape == (T,)
  half = evaluate.ENVELOPE_FRAMES // 2
  spread = slice(40 - half, 40 + half + 1)
  np.testing.assert_allclose(envelope[spread],
                             np.mean(expected_frame_rms[spread]), rtol=1e-6)
  np.testing.assert_allclose(envelope[:40 - half], 2.0, rtol=1e-6)
  np.testing.assert_allclose(envelope[40 + half + 1:], 2.0, rtol=1e-6)
  batched = np.asarray(evaluate.envelope(np.stack([clip, 2 * clip])))
  np.testing.assert_allclose(batched, [envelope, 2 * envelope], rtol=1e-6)


def test_pearson_matches_numpy_and_is_zero_for_a_constant():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, T))
  np.testing.assert_allclose(evaluate.pearson(a, b), np.corrcoef(a, b)[0, 1],
                             rtol=1e-5)
  np.testing.assert_allclose(evaluate.pearson(a, 3 * a + 1), 1.0, rtol=1e-6)
  assert float(evaluate.pearson(a, np.ones(T))) == 0.0


def test_pair_metrics_follow_whose_rhythm_the_output_has():
  inputs, targets = pulses(30, 0, seed=1), pulses(30, 15, seed=2)
  ones, zeros = np.ones((T, D), np.float32), np.zeros((T, D), np.float32)
  like_input = evaluate.pair_metrics(2.0 * inputs, inputs, targets, ones,
                                     zeros)
  np.testing.assert_allclose(like_input['rhythm_corr_input'], 1.0, rtol=1e-5)
  assert like_input['rhythm_corr_target'] < -0.5  # opposite phase
  assert like_input['rhythm_preserved'] == 1.0
  np.testing.assert_allclose(like_input['rms_error_input'],
                             np.sqrt(np.mean(inputs ** 2)), rtol=1e-5)
  assert like_input['complementarity'] == 1.0
  assert like_input['input_mask_mean'] == 1.0
  assert like_input['target_mask_mean'] == 0.0
  like_target = evaluate.pair_metrics(targets, inputs, targets, ones, ones)
  np.testing.assert_allclose(like_target['rhythm_corr_target'], 1.0,
                             rtol=1e-5)
  assert like_target['rms_error_target'] == 0.0
  assert like_target['rhythm_preserved'] == 0.0
  assert like_target['complementarity'] == 0.0
  assert like_target['coverage'] == 1.0


def test_batch_metrics_average_per_pair():
  inputs = np.stack([pulses(30, 0, seed=3), pulses(20, 5, seed=4)])
  masks = np.ones_like(inputs)
  per_pair = evaluate.batch_metrics(inputs, inputs, -inputs, masks, masks)
  assert per_pair['rhythm_preserved'].shape == (2,)
  halves = [{k: v[:1] for k, v in per_pair.items()},
            {k: v[1:] for k, v in per_pair.items()}]
  means = evaluate.mean_over_pairs(halves)
  np.testing.assert_allclose(means['rms_error_target'], np.mean(
      [np.sqrt(np.mean((2 * x) ** 2)) for x in inputs]), rtol=1e-5)
  assert means['rhythm_preserved'] == 1.0


def test_padded_batches_cover_every_index_once_in_one_shape():
  batches = list(evaluate.padded_batches(7, 3))
  assert [len(indices) for indices, _ in batches] == [3, 3, 3]
  assert [count for _, count in batches] == [3, 3, 1]
  real = np.concatenate([indices[:count] for indices, count in batches])
  np.testing.assert_array_equal(real, np.arange(7))
  np.testing.assert_array_equal(batches[-1][0], [6, 6, 6])
  assert [list(i) for i, _ in evaluate.padded_batches(2, 8)] == [[0, 1]]


def test_markdown_table_has_one_row_per_method():
  results = {method: {name: 0.25 for name, _, _ in evaluate.COLUMNS}
             for method in evaluate.METHODS}
  lines = evaluate.markdown_table(results).splitlines()
  assert len(lines) == 2 + len(evaluate.METHODS)
  assert all(line.count('|') == len(evaluate.COLUMNS) + 2 for line in lines)
  assert lines[2].startswith('| `creative_agent` | 25.0% | 0.250 |')
  assert [line.split('`')[1] for line in lines[2:]] == list(evaluate.METHODS)


def test_method_model_swaps_the_masks_and_keeps_the_cascade(tiny_config):
  params = {'cascade_stages_0': {'w': 1}, 'creative_agent': {'w': 2}}
  variables = {'params': params, 'batch_stats': {'cascade_stages_0': 3}}
  config, same = evaluate.method_model(tiny_config, variables,
                                       'creative_agent')
  assert config is tiny_config and same is variables
  config, baseline = evaluate.method_model(tiny_config, variables, 'energy')
  assert not config.model.use_creative_agent
  assert config.model.fixed_masking == 'energy'
  assert tiny_config.model.use_creative_agent  # a copy was changed
  assert baseline == {'params': {'cascade_stages_0': {'w': 1}},
                      'batch_stats': {'cascade_stages_0': 3}}
  with pytest.raises(ValueError, match='unknown method'):
    evaluate.method_model(tiny_config, variables, 'random')
  no_agent = ml_collections.ConfigDict(copy.deepcopy(tiny_config))
  no_agent.model.use_creative_agent = False
  with pytest.raises(ValueError, match='use_creative_agent'):
    evaluate.method_model(no_agent, variables, 'none')


def test_parse_checkpoint():
  assert evaluate.parse_checkpoint('best') == 'best'
  assert evaluate.parse_checkpoint('latest') == 'latest'
  assert evaluate.parse_checkpoint('120') == 120
  with pytest.raises(Exception, match='--checkpoint'):
    evaluate.parse_checkpoint('newest')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, metrics.jsonl records): 2 training steps, then validation.

  300-frame clips hold two 150-frame temporal segments; two songs per split
  of one pair each.
  """
  data_dir = tmp_path_factory.mktemp('latents')
  test_sample.write_dataset(data_dir, {
      'train0': ('train', 2 * CLIP), 'train1': ('train', 2 * CLIP),
      'val0': ('val', 2 * CLIP), 'val1': ('val', 2 * CLIP)})
  config = train_config.get_config()
  config.update(data_dir=str(data_dir), num_frames=CLIP,
                per_device_batch_size=2, num_train_steps=2,
                eval_every_steps=2, checkpoint_every_steps=2)
  config.loss.gan_weight = 0.0  # no discriminator: less to compile
  workdir = str(tmp_path_factory.mktemp('workdir'))
  train.train_and_evaluate(config, workdir)
  return workdir, run_log.read_records(os.path.join(workdir, 'metrics.jsonl'))


def test_every_method_on_a_trained_checkpoint(trained, tmp_path):
  workdir, records = trained
  results = evaluate.evaluate_checkpoint(workdir, tmp_path, batch_size=2)
  assert json.loads((tmp_path / 'metrics.json').read_text()) == results
  assert list(results) == list(evaluate.METHODS)
  for metrics in results.values():
    assert set(metrics) == {name for name, _, _ in evaluate.COLUMNS} | {
        'overlap'}
    assert all(np.isfinite(value) for value in metrics.values())
    assert -1 <= metrics['rhythm_corr_input'] <= 1
    assert metrics['rms_error_input'] > 0

  # The agent's row is the checkpoint's validation (same pairs, eval mode).
  validation = [r for r in records if r['split'] == 'val'][-1]
  for name in ('complementarity', 'input_mask_mean', 'target_mask_mean'):
    np.testing.assert_allclose(results['creative_agent'][name],
                               validation[name], rtol=1e-5)

  # Baseline rows follow from the baselines' definitions.
  def expect(method, **expected):
    for name, value in expected.items():
      np.testing.assert_allclose(results[method][name], value, atol=1e-5,
                                 err_msg=f'{method} {name}')

  expect('none', complementarity=0.0, input_mask_mean=1.0,
         target_mask_mean=1.0, coverage=1.0)
  profile = baselines.temporal_profile(CLIP)
  fades = np.mean(profile * (1 - profile))
  assert 0 < fades < 0.01  # one crossfade between two segments
  expect('temporal', complementarity=1 - fades,
         input_mask_mean=np.mean(profile),
         target_mask_mean=1 - np.mean(profile))
  low = baselines.low_channels(latents.LATENT_DIM)
  attenuation = baselines.FREQUENCY_ATTENUATION
  expect('frequency', complementarity=1 - attenuation,
         input_mask_mean=np.mean(np.where(low, 1, attenuation)),
         target_mask_mean=np.mean(np.where(low, attenuation, 1)),
         coverage=attenuation ** 2)
  expect('spectral', complementarity=1.0, input_mask_mean=0.5,
         target_mask_mean=0.5, coverage=0.0)
  expect('hybrid',
         complementarity=1 - baselines.HYBRID_ATTENUATION * fades)
  np.testing.assert_allclose(results['energy']['input_mask_mean'], 0.3,
                             atol=0.01)
  np.testing.assert_allclose(results['energy']['target_mask_mean'], 0.7,
                             atol=0.01)

  table = (tmp_path / 'metrics.md').read_text()
  assert table.count('| `') == len(evaluate.METHODS)
  assert '| `temporal` | 99.' in table
  assert '| `frequency` | 80.0% |' in table
  with Image.open(tmp_path / 'training_curves.png') as image:
    assert image.format == 'PNG'


def test_bad_requests_name_the_cause(trained, tmp_path):
  workdir, _ = trained
  with pytest.raises(latents.LatentDataError, match="unknown split 'test'"):
    evaluate.evaluate_checkpoint(workdir, tmp_path, split='test')
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.evaluate', '--workdir', workdir,
       '--out-dir', str(tmp_path), '--checkpoint', '99'],
      env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
      text=True)
  assert result.returncode != 0
  assert 'no checkpoint 99' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.listdir(tmp_path)
