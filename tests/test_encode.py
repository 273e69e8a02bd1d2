"""Audio folder -> latent dataset: bad files, round trip, resume, CLI."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from jingle_jax import latents
from precompute import codec
from precompute import encode
from precompute import encodec_weights
from precompute import synth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {'val_fraction': 0.34, 'seed': 0, 'shard_seconds': 1.0}
CLI_SETTINGS = ['--val-fraction', '0.34', '--seed', '0', '--shard-seconds',
                '1', '--random-encodec', '0']
GOOD = {'live/stereo_48k.flac': 32.0, 'mono_44k.wav': 32.0,
        'song_24k.ogg': 32.5}
BAD = {'corrupt.wav': 'unreadable', 'empty.flac': 'empty file',
       'short.wav': 'shorter than one pair', 'silent.wav': 'silent',
       'surround.wav': '3 channels'}


@pytest.fixture(scope='module')
def audio_dir(tmp_path_factory):
  """Three usable songs (one per rate, channel count and format) and five
  files to skip."""
  path = tmp_path_factory.mktemp('audio')
  os.makedirs(path / 'live')
  mono = synth.render_song(5, 0, 32.0, 44_100)
  soundfile.write(path / 'mono_44k.wav', mono, 44_100)
  left = synth.render_song(5, 1, 32.0, 48_000)
  soundfile.write(path / 'live/stereo_48k.flac',
                  np.stack([left, 0.7 * np.roll(left, 100)], 1), 48_000)
  soundfile.write(path / 'song_24k.ogg', synth.render_song(5, 2, 32.5, 24_000),
                  24_000, format='OGG', subtype='VORBIS')
  with open(path / 'corrupt.wav', 'wb') as f:
    f.write(b'RIFF\x00\x01\x00\x00WAVEjunk' + bytes(range(256)) * 4)
  open(path / 'empty.flac', 'wb').close()
  soundfile.write(path / 'short.wav', synth.render_song(5, 3, 10.0, 24_000),
                  24_000)
  soundfile.write(path / 'silent.wav', np.zeros(33 * 8000), 8000)
  soundfile.write(path / 'surround.wav', np.full((33 * 8000, 3), 0.1), 8000)
  (path / 'notes.txt').write_text('not audio')
  return path


@pytest.fixture(scope='module')
def model():
  return encodec_weights.random_model(0).eval()


@pytest.fixture(scope='module')
def dataset_dir(audio_dir, model, tmp_path_factory):
  """The folder encoded with random EnCodec weights, one song per shard."""
  path = tmp_path_factory.mktemp('latents')
  encode.encode_dataset(audio_dir, path, model, 'random:0', device='cpu',
                        **SETTINGS)
  return path


def test_finds_audio_files_recursively(audio_dir):
  assert encode.find_audio(audio_dir) == sorted(list(GOOD) + list(BAD))
  assert encode.song_id('live/stereo_48k.flac') == 'live__stereo_48k'
  assert encode.song_id('a b/Déjà vu.ogg') == 'a_b__D_j__vu'


def test_resampling_is_band_limited():
  def tone(hz, rate, seconds=1.0):
    return np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate
                  ).astype(np.float32)

  kept = encode.to_24khz(tone(1000, 44_100), 44_100)
  assert len(kept) == encode.resampled_length(44_100, 44_100) == 24_000
  np.testing.assert_allclose(kept[500:-500], tone(1000, 24_000)[500:-500],
                             atol=2e-3)
  # Above the 12 kHz Nyquist frequency of 24 kHz: filtered out, not aliased
  # to 9 kHz.
  removed = encode.to_24khz(tone(15_000, 48_000), 48_000)
  assert np.sqrt(np.mean(removed[500:-500] ** 2)) < 1e-2
  assert encode.resampled_length(1001, 44_100) == 545  # ceil(544.2)


def test_good_files_are_encoded_and_bad_ones_reported(dataset_dir):
  manifest = latents.LatentDataset(dataset_dir).manifest
  assert {s['source']: s['duration'] for s in manifest['songs']} == GOOD
  reasons = {s['source']: s['reason'] for s in manifest['skipped']}
  assert sorted(reasons) == sorted(BAD)
  for source, reason in BAD.items():
    assert reason in reasons[source]


def test_round_trip_at_75_frames_per_second_split_by_song(dataset_dir):
  dataset = latents.LatentDataset(dataset_dir / 'manifest.json')
  manifest = dataset.manifest
  assert manifest['encodec_weights'] == 'random:0'
  assert (manifest['sample_rate'], manifest['frame_rate'],
          manifest['latent_dim'], manifest['dtype']) == (24_000, 75, 128,
                                                         'float16')
  train, val = dataset.songs('train'), dataset.songs('val')
  assert len(val) == 1 and len(train) == 2  # round(0.34 * 3) songs in val
  assert not {s.id for s in train} & {s.id for s in val}
  for song in train + val:
    assert song.latents.shape == (int(song.duration * 75), 128)
  assert len(dataset.songs('train')[0].latents) in (2400, 2437)
  frames = np.concatenate([s.latents for s in train]).astype(np.float64)
  np.testing.assert_allclose(dataset.mean, frames.mean(0), atol=1e-6)
  np.testing.assert_allclose(dataset.std, frames.std(0), rtol=1e-4)
  assert sorted(os.listdir(dataset_dir)) == [
      'manifest.json', 'shard_00000.json', 'shard_00000.npy',
      'shard_00001.json', 'shard_00001.npy', 'shard_00002.json',
      'shard_00002.npy']


def test_latents_are_the_encoder_output_of_each_16s_clip(audio_dir,
                                                         dataset_dir, model):
  songs = {s.source: s for split in latents.SPLITS
           for s in latents.LatentDataset(dataset_dir).songs(split)}
  for source in GOOD:
    samples, rate = soundfile.read(audio_dir / source, dtype='float32',
                                   always_2d=True)
    audio = encode.to_24khz(samples.mean(1), rate)
    # EnCodec is causal: the first second of a clip encodes alike alone.
    for clip in (0, 1):
      start = clip * codec.CHUNK_FRAMES
      second = torch.from_numpy(audio[start * codec.HOP:][:24_000])
      with torch.inference_mode():
        alone = model.encoder(second[None, None])[0].T.numpy()
      np.testing.assert_allclose(songs[source].latents[start:start + 75],
                                 alone, atol=1e-3, rtol=1e-2)


def fake_encode(model, songs, *, device, batch_size):
  """Latents of mono audio without EnCodec: frame means of the waveform."""
  del model, device, batch_size
  return [np.repeat(song[:len(song) // 320 * 320].reshape(-1, 320)
                    .mean(1, keepdims=True), 128, 1) for song in songs]


def test_interrupted_run_resumes_to_identical_output(audio_dir, tmp_path,
                                                     monkeypatch):
  calls = []

  def encode_until(limit):
    def counted(*args, **kwargs):
      if len(calls) == limit:
        raise KeyboardInterrupt  # killed while encoding shard `limit`
      calls.append(1)
      return fake_encode(*args, **kwargs)
    return counted

  def run(out_dir):
    return encode.encode_dataset(audio_dir, out_dir, None, 'random:0',
                                 device='cpu', **SETTINGS)

  monkeypatch.setattr(codec, 'encode', encode_until(99))
  run(tmp_path / 'whole')
  calls.clear()
  monkeypatch.setattr(codec, 'encode', encode_until(1))
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / 'resumed')
  resumed = tmp_path / 'resumed'
  assert not (resumed / 'manifest.json').exists()
  first_shard = os.stat(resumed / 'shard_00000.npy').st_mtime_ns
  calls.clear()
  monkeypatch.setattr(codec, 'encode', encode_until(99))
  run(resumed)
  assert len(calls) == 2  # the two unfinished shards only
  assert os.stat(resumed / 'shard_00000.npy').st_mtime_ns == first_shard
  names = sorted(os.listdir(tmp_path / 'whole'))
  assert sorted(os.listdir(resumed)) == names
  for name in names:
    assert ((resumed / name).read_bytes()
            == (tmp_path / 'whole' / name).read_bytes()), name


def test_cli_reruns_a_finished_dataset_without_encoding(audio_dir,
                                                        dataset_dir,
                                                        tmp_path):
  copy = tmp_path / 'latents'
  shutil.copytree(dataset_dir, copy)
  shards = {name: os.stat(copy / name).st_mtime_ns
            for name in os.listdir(copy) if name.startswith('shard')}
  result = subprocess.run(
      [sys.executable, '-m', 'precompute.encode', '--audio-dir',
       str(audio_dir), '--out-dir', str(copy), '--device', 'cpu']
      + CLI_SETTINGS, cwd=REPO, capture_output=True, text=True, check=True)
  assert 'SEEDED RANDOM (seed 0)' in result.stderr
  assert '3/3 songs' in result.stderr and 'audio-s/s' in result.stderr
  assert ((copy / 'manifest.json').read_bytes()
          == (dataset_dir / 'manifest.json').read_bytes())
  assert shards == {name: os.stat(copy / name).st_mtime_ns for name in shards}


def test_cli_errors_name_the_flag(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'precompute.encode', '--audio-dir',
       str(tmp_path / 'nowhere'), '--out-dir', str(tmp_path / 'out')]
      + CLI_SETTINGS, cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1
  assert f'--audio-dir {tmp_path / "nowhere"}: not a directory' in (
      result.stderr)
  assert 'Traceback' not in result.stderr


def test_splits_are_by_song_and_follow_the_seed():
  def splits(count, fraction, seed):
    records = [{'id': str(i)} for i in range(count)]
    encode.assign_splits(records, fraction, seed)
    return [r['split'] for r in records]

  assert splits(10, 0.1, 42) == splits(10, 0.1, 42)
  assert splits(20, 0.25, 1).count('val') == 5
  assert splits(8, 0.1, 0).count('val') == 1  # at least one
  assert splits(2, 0.9, 0).count('train') == 1  # at least one
  assert splits(1, 0.1, 0) == ['train'] and splits(5, 0.0, 0).count('val') == 0
  assert len({tuple(splits(20, 0.25, seed)) for seed in range(5)}) > 1


def test_shards_hold_consecutive_songs_of_about_shard_seconds():
  records = [{'id': str(i), 'duration': d}
             for i, d in enumerate([40.0, 40.0, 100.0, 10.0, 10.0])]
  plan = encode.plan_shards(records, shard_seconds=90.0)
  assert [(name, [r['id'] for r in songs]) for name, songs in plan] == [
      ('shard_00000', ['0', '1']), ('shard_00001', ['2']),
      ('shard_00002', ['3', '4'])]
