"""Training with the EnCodec decoder: the spectral-outlier penalty and the
audio-target term against the dataset's waveforms in the step (with the
GAN), resumed exactly after a kill, and TensorBoard's pictures and audio of
validation pairs."""

import io
import os
import signal
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile
from tensorboardX.proto import event_pb2

from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.models import encodec_decoder
from jingle_jax.training import run_dir
from jingle_jax.training import run_log
from jingle_jax.training import step_timing
import latent_data

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(TESTS_DIR, 'train_config.py')
FRAMES = 8  # train_config's clips
# 6 steps of 4 pairs (2 per epoch), validations at 2, 4 and 6, media at 4.
SETTINGS = {'num_train_steps': 6, 'eval_every_steps': 2, 'media_pairs': 1,
            'media_every_evals': 2, 'loss.spectral_outlier_weight': 0.01,
            'loss.audio_target_weight': 0.5}


def events(directory):
  """Every Event of the TensorBoard files in `directory` (TFRecords)."""
  found = []
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      length, = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      found.append(event)
      offset += 12 + length + 4
  return found


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The runs share compilations; single-threaded Eigen keeps CPU results
  independent of thread timing, and optimisation level 0 halves compile
  times (as in test_train.py)."""
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=TESTS_DIR,
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('cache')),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
              XLA_FLAGS='--xla_cpu_multi_thread_eigen=false '
              '--xla_backend_optimization_level=0')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """(data dir, decoder parameters, songs): 2 train songs, 1 val song with
  their audio, and decoder weights of Flax's initialisation."""
  data_dir = tmp_path_factory.mktemp('latents')
  decoder = encodec_decoder.EncodecDecoder().init(
      jax.random.key(0), np.zeros((1, 7, latents.LATENT_DIM)))['params']
  encodec_decoding.write(data_dir, decoder, 'random:0')
  rng = np.random.default_rng(0)
  songs = {f'song{i}': (split, rng.normal(size=(40, latents.LATENT_DIM)))
           for i, split in enumerate(['train'] * 2 + ['val'])}
  audio = {song: rng.uniform(-0.3, 0.3, 40 * 320) for song in songs}
  latent_data.write_dataset(data_dir, songs, dtype='float32',
                            decoder=encodec_decoding.DECODER_FILE, audio=audio)
  return data_dir, decoder, songs


@pytest.fixture(scope='module')
def whole_run(tmp_path_factory, env, dataset):
  workdir = tmp_path_factory.mktemp('whole')
  subprocess.run(
      [sys.executable, '-m', 'jingle_jax.train', f'--config={CONFIG}',
       f'--workdir={workdir}', f'--config.data.dir={dataset[0]}',
       *(f'--config.{name}={value}' for name, value in SETTINGS.items())],
      env=env, check=True, capture_output=True)
  return workdir


def test_killed_run_with_the_outlier_penalty_resumes_exactly(
    tmp_path, env, dataset, whole_run):
  overrides = [f'{name}={value!r}' for name, value in SETTINGS.items()]
  killed = subprocess.run(
      [sys.executable, os.path.join(TESTS_DIR, 'killed_run.py'),
       str(tmp_path), str(dataset[0]), *overrides], env=env,
      stderr=subprocess.DEVNULL, check=False)
  assert killed.returncode == -signal.SIGKILL
  subprocess.run(
      [sys.executable, '-m', 'jingle_jax.train', f'--config={CONFIG}',
       f'--workdir={tmp_path}', f'--config.data.dir={dataset[0]}',
       *(f'--config.{name}={value}' for name, value in SETTINGS.items())],
      env=env, check=True, capture_output=True)
  whole = run_log.read_records(whole_run / run_dir.METRICS_FILE)
  resumed = run_log.read_records(tmp_path / run_dir.METRICS_FILE)
  assert [r['step'] for r in resumed] == [r['step'] for r in whole]
  for a, b in zip(whole, resumed):  # every metric but the timings
    for name in step_timing.METRICS:
      a.pop(name, None), b.pop(name, None)
    assert a == b
  outlier = [r['spectral_outlier'] for r in whole]
  assert len(outlier) == 9 and all(value > 0 for value in outlier)
  assert all('g_adv' in r and r['audio_target'] > 0 for r in whole)


def test_the_run_says_what_the_audio_terms_compare_with(whole_run):
  notes = [value.tensor.string_val[0].decode()
           for event in events(whole_run / 'tensorboard')
           for value in event.summary.value if value.tag.startswith('run')]
  assert notes == ["audio terms against the target clips' waveforms"]


def test_validations_log_mask_pictures_and_decoded_audio(dataset, whole_run):
  _, decoder, songs = dataset
  workdir = whole_run
  media = {}
  for event in events(workdir / 'tensorboard'):
    for value in event.summary.value:
      if value.HasField('image') or value.HasField('audio'):
        media[value.tag, event.step] = value
  # Validations at steps 2, 4 and 6; the second of them shows media.
  assert sorted(media) == [('val_pair_0/input', 4), ('val_pair_0/masks', 4),
                           ('val_pair_0/output', 4), ('val_pair_0/target', 4)]
  picture = media['val_pair_0/masks', 4].image
  assert (picture.height, picture.width, picture.colorspace) == (800, 1000, 3)
  # The first matched pair: input frames 0-7 of the val song, target 8-15.
  expected = encodec_decoding.decode_clips(decoder, [songs['song2'][1][:FRAMES],
                                            songs['song2'][1][FRAMES:16]])
  for name, want in zip(('input', 'target'), expected):
    sound = media[f'val_pair_0/{name}', 4].audio
    samples, rate = soundfile.read(io.BytesIO(sound.encoded_audio_string))
    assert rate == sound.sample_rate == 24_000
    np.testing.assert_allclose(samples, np.clip(want, -1, 1), atol=1e-4)
  output, _ = soundfile.read(io.BytesIO(
      media['val_pair_0/output', 4].audio.encoded_audio_string))
  assert output.shape == (FRAMES * 320,) and np.any(output)
