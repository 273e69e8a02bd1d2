"""Latents -> wav with the dataset's EnCodec weights (PyTorch and JAX
decoders), and refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import wav_files
from precompute import codec
from precompute import jax_weights
from precompute import encodec_weights
import latent_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = {'song_a': 90, 'song_b': 40}
# jingle_jax.decode with torch hidden: any import of it fails.
WITHOUT_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; sys.argv[0] = 'decode'; "
    "runpy.run_module('jingle_jax.decode', run_name='__main__')")


def write_dataset(path, weights, decoder=None):
  """A dataset of random latents recording EnCodec weights `weights`."""
  rng = np.random.default_rng(0)
  latent_data.write_dataset(path, {
      song_id: (split, 0.1 * rng.normal(size=(frames, latents.LATENT_DIM)))
      for (song_id, frames), split in zip(FRAMES.items(), ['train', 'val'])},
                            weights=weights, decoder=decoder)
  return latents.LatentDataset(path)


@pytest.fixture
def clip_files(tmp_path):
  rng = np.random.default_rng(1)
  np.save(tmp_path / 'one.npy', rng.normal(size=(30, 128)).astype(np.float32))
  np.save(tmp_path / 'batch.npy', rng.normal(size=(2, 20, 128)))
  return [str(tmp_path / 'one.npy'), str(tmp_path / 'batch.npy')]


def test_both_clis_decode_files_and_songs_to_the_same_wavs(
    tmp_path, clip_files):
  jax_weights.export(tmp_path / 'latents', encodec_weights.random_model(0),
                        'random:0')
  write_dataset(tmp_path / 'latents', 'random:0',
                decoder=encodec_decoding.DECODER_FILE)
  arguments = ['--manifest', str(tmp_path / 'latents/manifest.json'),
               '--song', 'song_b'] + clip_files
  result = subprocess.run(
      [sys.executable, '-m', 'precompute.torch_decode', '--device', 'cpu',
       '--out-dir', str(tmp_path / 'torch')] + arguments,
      cwd=REPO, capture_output=True, text=True, check=True)
  assert 'SEEDED RANDOM (seed 0)' in result.stderr
  jax_result = subprocess.run(
      [sys.executable, '-c', WITHOUT_TORCH, '--out-dir',
       str(tmp_path / 'jax')] + arguments,
      cwd=REPO, capture_output=True, text=True)
  assert jax_result.returncode == 0, jax_result.stderr
  assert not jax_result.stderr  # quiet
  frames = {'one': 30, 'batch_0': 20, 'batch_1': 20, 'song_b': 40}
  for out, output in (('torch', result), ('jax', jax_result)):
    assert output.stdout.split() == [str(tmp_path / out / f'{name}.wav')
                                     for name in frames]
  for name, count in frames.items():
    audio, rate = soundfile.read(tmp_path / 'torch' / f'{name}.wav')
    assert rate == 24_000 and audio.shape == (count * 320,)
    assert np.all(np.isfinite(audio)) and np.any(audio)
    jax_audio, jax_rate = soundfile.read(tmp_path / 'jax' / f'{name}.wav')
    assert jax_rate == rate
    np.testing.assert_allclose(jax_audio, audio, atol=1e-5)


def test_song_decodes_as_its_latents(tmp_path):
  dataset = write_dataset(tmp_path / 'latents', 'random:0')
  model = encodec_weights.matching_weights(dataset)
  song = dataset.songs('train')[0]
  jobs = wav_files.clips_to_decode(dataset, [], ['song_a'])
  path, = codec.decode_to_wavs(model, jobs, tmp_path / 'wav',
                                      device='cpu', batch_size=2)
  with torch.inference_mode():
    expected = model.decoder(torch.from_numpy(
        song.latents.astype(np.float32).T)[None])[0, 0].numpy()
  audio, _ = soundfile.read(path, dtype='float32')
  np.testing.assert_allclose(audio, expected, atol=1e-5)


def test_refuses_other_weights_than_the_manifests(tmp_path):
  dataset = write_dataset(tmp_path / 'random', 'random:0')
  with pytest.raises(encodec_weights.WeightsError) as error:
    encodec_weights.matching_weights(dataset, random_seed=1)
  for text in (str(tmp_path / 'random/manifest.json'), 'random:0',
               'random:1', 'refusing'):
    assert text in str(error.value)

  checkpoint = tmp_path / 'encodec.th'
  torch.save(encodec_weights.random_model(2).state_dict(), checkpoint)
  with pytest.raises(encodec_weights.WeightsError, match='sha256:'):
    encodec_weights.matching_weights(dataset, checkpoint=str(checkpoint))
  # A dataset of those weights decodes with that checkpoint.
  _, weights = encodec_weights.load(checkpoint=str(checkpoint))
  hashed = write_dataset(tmp_path / 'hashed', weights)
  assert encodec_weights.matching_weights(hashed, checkpoint=str(checkpoint))


def test_bad_inputs_name_the_file(tmp_path):
  dataset = write_dataset(tmp_path / 'latents', 'random:0')
  for name, array in (('wide.npy', np.zeros((10, 64))),
                      ('nan.npy', np.full((10, 128), np.nan)),
                      ('ints.npy', np.zeros((10, 128), np.int32)),
                      ('empty.npy', np.zeros((0, 128)))):
    np.save(tmp_path / name, array)
    with pytest.raises(ValueError, match=str(tmp_path / name)):
      wav_files.clips_to_decode(dataset, [str(tmp_path / name)], [])
  with pytest.raises(ValueError, match='--song nope: no such song in .*'
                     'manifest.json'):
    wav_files.clips_to_decode(dataset, [], ['nope'])
  np.save(tmp_path / 'song_a.npy', np.zeros((10, 128)))
  with pytest.raises(ValueError, match='same name'):
    wav_files.clips_to_decode(dataset, [str(tmp_path / 'song_a.npy')],
                           ['song_a'])
