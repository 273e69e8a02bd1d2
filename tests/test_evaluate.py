"""The trained model against the baselines: the table and the command."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from jingle_jax import evaluate
from jingle_jax import train
from jingle_jax.config import run_config
from jingle_jax.data import latents
from jingle_jax.models import baselines
from jingle_jax.training import run_dir
from jingle_jax.training import run_log
import html_page
import test_sample
import train_config

CLIP = 300  # frames per clip of the trained checkpoint


def test_markdown_table_has_one_row_per_method():
  results = {method: {name: 0.25 for name, _, _ in evaluate.COLUMNS}
             for method in evaluate.METHODS}
  lines = evaluate.markdown_table(results).splitlines()
  assert len(lines) == 2 + len(evaluate.METHODS)
  assert all(line.count('|') == len(evaluate.COLUMNS) + 2 for line in lines)
  assert lines[2].startswith('| `creative_agent` | 25.0% | 0.250 |')
  assert [line.split('`')[1] for line in lines[2:]] == list(evaluate.METHODS)


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
  config.data.dir = str(data_dir)
  config.update(num_frames=CLIP,
                per_device_batch_size=2, num_train_steps=2,
                eval_every_steps=2, checkpoint_every_steps=2)
  config.loss.gan_weight = 0.0  # no discriminator: less to compile
  workdir = str(tmp_path_factory.mktemp('workdir'))
  train.train_and_evaluate(config, workdir)
  return workdir, run_log.read_records(os.path.join(workdir, 'metrics.jsonl'))


def test_every_method_on_a_trained_checkpoint(trained, tmp_path):
  workdir, records = trained
  results = evaluate.evaluate_checkpoint(workdir, tmp_path, batch_size=2,
                                         report_pairs=0)
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


def test_report_plays_every_method_of_the_first_pairs(trained, tmp_path):
  """report.html: its table is metrics.json's; every file it links is there
  and plays (the dataset's random EnCodec weights, said on the page)."""
  workdir, _ = trained
  results = evaluate.evaluate_checkpoint(workdir, tmp_path, batch_size=2,
                                         report_pairs=1)
  page = html_page.Page(str(tmp_path / evaluate.REPORT_FILE))
  assert not page.external
  text = ' '.join(page.text)
  assert 'random EnCodec weights (random:0)' in text
  assert 'step 2' in text
  facts = dict(next(t for t in page.tables if t[0][0] == 'workdir'))
  config = run_dir.read_config(workdir).optim
  assert facts['optimisers'] == (
      f'AdamW lr {config.learning_rate:g}, discriminator lr '
      f'{config.disc_learning_rate:g}, constant rates, weights as trained '
      '(no average)')
  assert facts['EnCodec weights'] == 'random:0 (torch encoder)'
  assert facts['loss weights'] == evaluate.loss_facts(
      run_dir.read_config(workdir).loss)
  table = next(t for t in page.tables if t[0][0] == 'Method')
  assert table[1:] == evaluate.table_rows(results)
  assert table[1:] == evaluate.table_rows(
      json.loads((tmp_path / 'metrics.json').read_text()))
  found = page.check_links(frames=CLIP)
  audio = sorted(path for path in found if path.endswith('.wav'))
  assert audio == sorted(f'pairs/pair_000/{name}.wav' for name in (
      'input', 'target', *evaluate.METHODS))
  assert found['pairs/pair_000/masks.png'] == (1000, 800)
  assert 'training_curves.png' in found
  # The agent's output is not the input, nor a baseline's output.
  assert not np.allclose(found['pairs/pair_000/creative_agent.wav'],
                         found['pairs/pair_000/input.wav'])
  assert not np.allclose(found['pairs/pair_000/creative_agent.wav'],
                         found['pairs/pair_000/temporal.wav'])


def test_report_without_decoder_weights_says_why(trained, tmp_path):
  workdir, _ = trained
  data_dir = tmp_path / 'latents'
  shutil.copytree(recorded_data_dir(workdir), data_dir)
  os.remove(data_dir / 'decoder.msgpack')
  out = tmp_path / 'out'
  evaluate.evaluate_checkpoint(workdir, out, batch_size=2, report_pairs=2,
                               data_dir=str(data_dir))
  page = html_page.Page(str(out / evaluate.REPORT_FILE))
  text = ' '.join(page.text)
  assert 'No audio:' in text and 'decoder weights are missing' in text
  assert [path for tag, path in page.links if tag == 'audio'] == []
  assert page.check_links(frames=CLIP).keys() == {
      'training_curves.png', 'pairs/pair_000/masks.png',
      'pairs/pair_001/masks.png'}


def recorded_data_dir(workdir):
  return json.loads((pathlib.Path(workdir) / 'config.json').read_text())[
      'data']['dir']


def test_loss_facts_name_weights_and_switches():
  loss = run_config.LossConfig(balance_per_pair=True, gan_weight=0.0,
                               spectral_outlier_weight=0.0)
  assert evaluate.loss_facts(loss) == (
      'mask_reg_weight 0.1, overlap_weight 1, coverage_weight 0.5, '
      'temporal_weight 5, balance_weight 5, balance_per_pair')
