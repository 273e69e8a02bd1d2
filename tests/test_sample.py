"""Sampling dataset pairs and given pairs from a checkpoint."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import soundfile

from jingle_jax import sample
from jingle_jax.config import run_config
from jingle_jax.data import input_pipeline
from jingle_jax.data import latent_space
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import trained_model
from jingle_jax.models import encodec_decoder
from jingle_jax.training import run_dir
from jingle_jax.training import train_step
import latent_data
import train_config

FRAMES = 8  # frames per clip of train_config
SCALE, OFFSET = 3.0, 5.0  # raw latents far from standardised ones


def write_dataset(path, songs: dict, seed=0) -> dict:
  """A latent dataset of random songs {id: (split, frames)} with decoder
  weights (Flax's initialisation; no torch); returns the raw latents
  {id: [frames, 128]}."""
  decoder = encodec_decoder.EncodecDecoder().init(
      jax.random.key(seed), np.zeros((1, 7, latents.LATENT_DIM)))['params']
  encodec_decoding.write(path, decoder, 'random:0')
  rng = np.random.default_rng(seed)
  raw = {song_id: (OFFSET + SCALE * rng.normal(
      size=(frames, latents.LATENT_DIM))).astype(np.float32)
         for song_id, (_, frames) in songs.items()}
  latent_data.write_dataset(path, {song_id: (split, raw[song_id])
                                   for song_id, (split, _) in songs.items()},
                            dtype='float32',
                            decoder=encodec_decoding.DECODER_FILE)
  return raw


def save_checkpoint(workdir, config, state, val_loss=1.0) -> None:
  """Records the config and saves `state` as the run's best checkpoint."""
  training_run = run_dir.open_for_training(workdir, config)
  training_run.save(state, run_dir.CheckpointExtras(
      data_position=1, rng=jax.random.key(0), val_loss=val_loss))
  training_run.close()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, raw songs, latent space): an initialised model's checkpoint.

  Two validation songs of three clips give two pairs each.
  """
  data_dir = tmp_path_factory.mktemp('latents')
  raw = write_dataset(data_dir, {'train0': ('train', 40),
                                 'val0': ('val', 3 * FRAMES),
                                 'val1': ('val', 3 * FRAMES)})
  config = train_config.get_config()
  config.data.dir = str(data_dir)
  config.data.normalise_latents = True  # the raw <-> model-space round trip
  config = run_config.parse(config)
  state = jax.jit(functools.partial(train_step.create_train_state, config))(
      jax.random.key(0))
  workdir = tmp_path_factory.mktemp('workdir')
  save_checkpoint(workdir, config, state)
  space = latent_space.LatentSpace.of(True, latents.LatentDataset(data_dir))
  return str(workdir), raw, space


def window(raw, record):
  first = record['first_frame']
  return raw[record['song']][first:first + record['frames']]


def load(directory, names):
  return {name: np.load(directory / f'{name}.npy') for name in names}


@pytest.fixture(scope='module')
def sampled(run, tmp_path_factory):
  """(out dir, samples.json content) of every validation pair."""
  out = tmp_path_factory.mktemp('samples')
  return out, sample.sample_dataset(run[0], out, num_samples=10)


def test_samples_are_raw_latents_of_the_matched_pairs(run, sampled):
  workdir, raw, space = run
  model = trained_model.TrainedModel.load(workdir)
  out, summary = sampled
  assert summary['checkpoint_step'] == 1  # the checkpoint's name
  assert not summary['shuffle_targets']
  assert json.loads((out / 'samples.json').read_text()) == summary
  windows = [(r['input']['song'], r['input']['first_frame'],
              r['target']['song'], r['target']['first_frame'])
             for r in summary['samples']]
  assert windows == [('val0', 0, 'val0', 8), ('val0', 8, 'val0', 16),
                     ('val1', 0, 'val1', 8), ('val1', 8, 'val1', 16)]
  for record in summary['samples']:
    directory = out / record['name']
    assert sorted(os.listdir(directory)) == [
        'input.npy', 'input_mask.npy', 'masks.png', 'output.npy',
        'target.npy', 'target_mask.npy']
    files = load(directory, ('input', 'target', 'output', 'input_mask',
                             'target_mask'))
    assert all(a.shape == (FRAMES, latents.LATENT_DIM) and
               a.dtype == np.float32 for a in files.values())
    # Normalised for the model and back: the raw windows come out.
    np.testing.assert_allclose(files['input'], window(raw, record['input']),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(files['target'], window(raw, record['target']),
                               rtol=1e-5, atol=1e-5)
    # The output is in raw units too: the model's, denormalised.
    model_out, _ = train_step.generator_forward(
        model.variables['params'], model.variables['batch_stats'],
        {name: space.normalise(files[name])[None]
         for name in ('input', 'target')}, None, model.config, train=False)
    np.testing.assert_allclose(space.normalise(files['output']),
                               model_out.output[0], rtol=1e-4, atol=1e-4)
    assert np.all((files['input_mask'] >= 0) & (files['input_mask'] <= 1))
    np.testing.assert_allclose(record['input_mask_mean'],
                               np.mean(files['input_mask']), rtol=1e-5)
    np.testing.assert_allclose(
        record['complementarity'],
        1 - np.mean(files['input_mask'] * files['target_mask']), rtol=1e-5)
    with Image.open(directory / 'masks.png') as image:
      assert image.format == 'PNG'


def test_shuffled_targets_come_from_other_songs(run):
  workdir, _, _ = run
  dataset = latents.LatentDataset(run_dir.read_config(workdir).data.dir)
  pairs = input_pipeline.Pairs(dataset.songs('val'), FRAMES, FRAMES)
  songs = pairs.index[:, 0]
  inputs, targets = sample.choose_pairs(pairs, 3, True, seed=0)
  np.testing.assert_array_equal(inputs, [0, 1, 2])
  assert np.all(songs[inputs] != songs[targets])
  again = sample.choose_pairs(pairs, 3, True, seed=0)
  np.testing.assert_array_equal(again[1], targets)
  matched = sample.choose_pairs(pairs, 9, False, seed=0)
  np.testing.assert_array_equal(matched[0], matched[1])
  assert len(matched[0]) == len(pairs) == 4
  one_song = input_pipeline.Pairs(dataset.songs('val')[:1], FRAMES, FRAMES)
  with pytest.raises(ValueError, match='two songs'):
    sample.choose_pairs(one_song, 2, True, seed=0)


@pytest.mark.parametrize('bad, message', [
    (np.zeros((FRAMES, 64), np.float32), r'--input .*in.npy: shape \(8, 64\)'),
    (np.zeros((FRAMES,), np.float32), r'--input .*in.npy: shape \(8,\)'),
    (np.zeros((FRAMES - 1, 128), np.float32),
     r'--input .*in.npy has 7 frames, --target .*tgt.npy 8'),
    (np.zeros((2001, 128), np.float32), r'2001 frames, expected 2 to 2000'),
    (np.full((FRAMES, 128), np.nan, np.float32), 'in.npy: holds non-finite'),
    (np.zeros((FRAMES, 128), np.int32), 'in.npy: dtype int32'),
    (None, r'--input .*in.npy: cannot be read'),
])
def test_bad_given_pairs_are_named(run, tmp_path, bad, message):
  workdir, raw, _ = run
  np.save(tmp_path / 'tgt.npy', raw['val0'][:FRAMES])
  if bad is not None:
    np.save(tmp_path / 'in.npy', bad)
  with pytest.raises(sample.PairError, match=message):
    sample.sample_pair(workdir, tmp_path / 'in.npy', tmp_path / 'tgt.npy',
                       tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


def test_command_line_runs_a_given_pair_like_the_dataset_pair(run, sampled,
                                                             tmp_path):
  """The given-pair mode, through the command line, reproduces a dataset
  sample from its raw files."""
  workdir = run[0]
  pair = sampled[0] / 'sample_001'
  out = tmp_path / 'out'
  command = [sys.executable, '-m', 'jingle_jax.sample', '--workdir', workdir,
             '--out-dir', str(out)]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(
      command + ['--input', str(pair / 'input.npy'), '--target',
                 str(pair / 'target.npy')],
      env=env, capture_output=True, text=True, check=True)
  assert result.stdout.strip().endswith(f'{out}/output.npy')
  assert sorted(os.listdir(out)) == ['input_mask.npy', 'masks.png',
                                     'output.npy', 'target_mask.npy']
  names = ('output', 'input_mask', 'target_mask')
  expected, given = load(pair, names), load(out, names)
  for name in names:  # one pair, not a batch: other rounding of sums
    scale = max(1.0, float(np.abs(expected[name]).max()))
    np.testing.assert_allclose(given[name], expected[name], rtol=1e-4,
                               atol=1e-5 * scale, err_msg=name)
  bad = subprocess.run(command + ['--checkpoint', '7'], env=env,
                       capture_output=True, text=True)
  assert bad.returncode != 0
  assert 'no checkpoint 7' in bad.stderr
  assert 'Traceback' not in bad.stderr


def test_wav_files_are_the_decoded_latents(run, tmp_path):
  workdir = run[0]
  sample.sample_dataset(workdir, tmp_path / 'out', num_samples=1, wav=True)
  dataset = latents.LatentDataset(run_dir.read_config(workdir).data.dir)
  params = encodec_decoding.read(dataset)
  for name in ('input', 'target', 'output'):
    path = tmp_path / 'out' / 'sample_000' / name
    audio, rate = soundfile.read(f'{path}.wav', dtype='float32')
    expected, = encodec_decoding.decode_clips(params, [np.load(f'{path}.npy')])
    assert rate == 24_000 and audio.shape == (FRAMES * 320,)
    np.testing.assert_allclose(audio, expected, atol=1e-5)

  bare = tmp_path / 'bare'  # a dataset without decoder weights
  latent_data.write_dataset(bare, {'a': ('train', np.ones((40, 128)))})
  with pytest.raises(encodec_decoding.DecoderError, match='records no decoder'):
    sample.sample_dataset(workdir, tmp_path / 'none', wav=True, data_dir=bare)
  assert not (tmp_path / 'none').exists()
