"""Two audio files -> an arrangement by a trained model, as a wav."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from jingle_jax import arrange
from jingle_jax.data import latents
from jingle_jax.training import run_dir
from precompute import encodec_weights
from precompute import jax_weights
import html_page
import small_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return small_run.trained_run(tmp_path_factory)


def test_two_songs_make_a_wav_of_one_clip(run, tmp_path):
  workdir, songs = run
  out = tmp_path / 'arranged.wav'
  step = arrange.arrange(workdir, songs / 'input.wav', songs / 'target.mp3',
                         str(out), input_start=0.5, target_start=1.0)
  assert step == 3  # the checkpoint's name
  audio, rate = soundfile.read(out)
  # 8 frames (train_config.num_frames) of 320 samples at 24 kHz.
  assert rate == 24_000 and audio.shape == (8 * latents.HOP,)
  assert np.all(np.isfinite(audio)) and np.any(audio != 0)
  assert (tmp_path / 'arranged.png').read_bytes()[:4] == b'\x89PNG'
  page = html_page.Page(str(tmp_path / 'arranged.html'))
  assert not page.external
  found = page.check_links(frames=8)
  assert sorted(found) == ['arranged.input.wav', 'arranged.png',
                           'arranged.target.wav', 'arranged.wav']
  # The clips as cut: 0.5 s into the input, 1 s into the target.
  input_clip = arrange.read_clip(songs / 'input.wav', '--input', 0.5,
                                 8 / latents.FRAME_RATE)
  np.testing.assert_allclose(found['arranged.input.wav'], input_clip,
                             atol=1 / 2**15)
  assert 'random EnCodec weights (random:0)' in ' '.join(page.text)


def test_other_encodec_weights_and_short_clips_are_refused(run, tmp_path):
  workdir, songs = run
  out = str(tmp_path / 'out.wav')
  with pytest.raises(encodec_weights.WeightsError, match='random:1'):
    arrange.arrange(workdir, songs / 'input.wav', songs / 'target.mp3', out,
                    random_seed=1)
  with pytest.raises(ValueError, match=r'--target .*target.mp3: 0.\d\d s '
                     r'from 1.9 s; the model\'s clips are 0.106667 s'):
    arrange.arrange(workdir, songs / 'input.wav', songs / 'target.mp3', out,
                    target_start=1.9)
  with pytest.raises(ValueError, match='--out .*: expected a .wav'):
    arrange.arrange(workdir, songs / 'input.wav', songs / 'target.mp3',
                    str(tmp_path / 'out.mp3'))
  assert os.listdir(tmp_path) == []


def test_command_line(run, tmp_path):
  workdir, songs = run
  result = subprocess.run(
      ['bash', os.path.join(REPO, 'run_tpu_or_gpu.sh'), 'arrange',
       '--workdir', str(workdir), '--input', str(songs / 'target.mp3'),
       '--target', str(songs / 'nowhere.wav'), '--out',
       str(tmp_path / 'out.wav')],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1
  assert 'jingle_jax.arrange: error: --target' in result.stderr
  assert 'nowhere.wav' in result.stderr and 'Traceback' not in result.stderr


ARRANGE_WITHOUT_TORCH = """
import sys
from jingle_jax import arrange
arrange.arrange(*sys.argv[1:5], data_dir=sys.argv[5])
loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))
print(loaded)
sys.exit(1 if loaded else 0)
"""


def test_a_dataset_of_the_jax_encoder_arranges_without_torch(run, tmp_path):
  """EnCodec's encoder and decoder in JAX, with the weights the dataset
  keeps: PyTorch's arrangement within 1e-4, and torch never loaded."""
  workdir, songs = run
  jax_data = tmp_path / 'latents'
  shutil.copytree(run_dir.read_config(workdir).data.dir, jax_data)
  manifest = json.loads((jax_data / 'manifest.json').read_text())
  (jax_data / 'manifest.json').write_text(json.dumps(
      dict(manifest, encoder='jax')))
  jax_weights.write_converted(jax_data / 'encodec_jax.msgpack',
                              encodec_weights.random_model(0), 'random:0')
  paths = [str(workdir), str(songs / 'input.wav'), str(songs / 'target.mp3')]
  arrange.arrange(*paths, str(tmp_path / 'torch.wav'))
  result = subprocess.run(
      [sys.executable, '-c', ARRANGE_WITHOUT_TORCH, *paths,
       str(tmp_path / 'jax.wav'), str(jax_data)],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  expected, _ = soundfile.read(tmp_path / 'torch.wav')
  actual, _ = soundfile.read(tmp_path / 'jax.wav')
  assert actual.shape == expected.shape == (8 * latents.HOP,)
  assert np.max(np.abs(actual - expected)) <= 1e-4 * np.max(np.abs(expected))
  with pytest.raises(ValueError, match='drop --encodec-checkpoint'):
    arrange.arrange(*paths, str(tmp_path / 'other.wav'), data_dir=jax_data,
                    random_seed=0)
