"""Audio folder -> latent dataset: formats, bad files, streaming, resume, CLI."""

import functools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from jingle_jax import synth
from jingle_jax.data import audio
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from precompute import codec
from precompute import encode
from precompute import encodec_weights
from precompute import jax_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {'val_fraction': 0.34, 'seed': 0}
CLI_SETTINGS = ['--val-fraction', '0.34', '--seed', '0', '--random-encodec',
                '0', '--device', 'cpu']
GOOD = {'live/stereo_48k.flac': 32.0, 'mono_44k.wav': 32.0,
        'song_24k.ogg': 32.5}
BAD = {'corrupt.wav': 'unreadable', 'empty.flac': 'empty file',
       'short.wav': '10.00 s is shorter than --min-seconds 32',
       'silent.wav': 'silent', 'low_rate.wav': '4000 Hz outside',
       'tune.m4a': '.m4a files cannot be read'}
# 44.1 kHz samples whose length at 24 kHz, ceil(n x 80 / 147), is one more
# than torchaudio's whole-file resampling gives (it rounds n x 80 / 147 to
# float32 first).
ROUNDING = 147 * 1800 + pow(80, -1, 147)


@pytest.fixture(scope='module')
def audio_dir(tmp_path_factory):
  """Three usable songs (one per rate, channel count and format) and six
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
  soundfile.write(path / 'low_rate.wav', np.full(33 * 4000, 0.1), 4000)
  (path / 'tune.m4a').write_bytes(b'\x00\x00\x00\x20ftypM4A ' + bytes(64))
  (path / 'notes.txt').write_text('not audio')
  return path


@pytest.fixture(scope='module')
def model():
  return random_encodec()


@pytest.fixture(scope='module')
def dataset_dir(audio_dir, model, tmp_path_factory):
  """The folder encoded with random EnCodec weights."""
  path = tmp_path_factory.mktemp('latents')
  encode.encode_dataset(audio_dir, path, encode.TorchEncoder(model, 'cpu'),
                        'random:0', **SETTINGS)
  return path


def test_finds_audio_files_recursively(audio_dir):
  assert encode.find_audio(audio_dir) == sorted(list(GOOD) + list(BAD))
  assert encode.song_id('live/stereo_48k.flac') == 'live__stereo_48k'
  assert encode.song_id('a b/Déjà vu.ogg') == 'a_b__D_j__vu'
  assert {'.mp3', '.opus', '.flac', '.aiff'} <= audio.readable_suffixes()


def test_good_files_are_encoded_and_bad_ones_reported(dataset_dir):
  manifest = latents.LatentDataset(dataset_dir).manifest
  assert {s.source: s.duration for s in manifest.songs} == GOOD
  assert manifest.min_seconds == 32.0
  reasons = {s.source: s.reason for s in manifest.skipped}
  assert sorted(reasons) == sorted(BAD)
  for source, reason in BAD.items():
    assert reason in reasons[source]


def test_round_trip_at_75_frames_per_second_split_by_song(dataset_dir):
  dataset = latents.LatentDataset(dataset_dir / 'manifest.json')
  manifest = dataset.manifest
  assert manifest.encodec_weights == 'random:0'
  recorded = manifest.to_json()
  assert (recorded['sample_rate'], recorded['frame_rate'],
          recorded['latent_dim'], recorded['dtype']) == (24_000, 75, 128,
                                                         'float16')
  train, val = dataset.songs('train'), dataset.songs('val')
  assert len(val) == 1 and len(train) == 2  # round(0.34 * 3) songs in val
  assert not {s.id for s in train} & {s.id for s in val}
  for song in train + val:
    assert song.latents.shape == (int(song.duration * 75), 128)
  frames = np.concatenate([s.latents for s in train]).astype(np.float64)
  np.testing.assert_allclose(dataset.mean, frames.mean(0), atol=1e-6)
  np.testing.assert_allclose(dataset.std, frames.std(0), rtol=1e-4)
  # The short song was encoded (a rerun with a lower --min-seconds keeps
  # it) but is not in the dataset.
  assert sorted(os.listdir(dataset_dir)) == [
      'decoder.msgpack', 'manifest.json'] + sorted(
          f'song-{encode.song_id(source)}.{suffix}'
          for source in [*GOOD, 'short.wav'] for suffix in ('json', 'npy'))
  # The decoder of the weights that encoded, for decoding without torch.
  assert manifest.decoder == 'decoder.msgpack'
  assert encodec_decoding.read(dataset)['conv_in']['kernel'].shape == (7, 128,
                                                                    512)


def test_jax_encoder_gives_pytorchs_dataset(model, tmp_path):
  """The same songs, frames, split and decoder; every latent within 1e-4
  (relative, stored as float32); the manifest names the encoder, a dataset
  keeps one, and a rerun resumes."""
  audio_dir = tmp_path / 'audio'
  os.makedirs(audio_dir)
  for index, rate in enumerate((44_100, 48_000, 22_050)):
    soundfile.write(audio_dir / f'song_{rate}.flac',
                    synth.render_song(6, index, 4.0 + index / 3, rate), rate)
  settings = dict(SETTINGS, dtype='float32', min_seconds=1.0)
  converted = {'encoder': jax_weights.encoder_params(model),
               'decoder': jax_weights.decoder_params(model)}
  made = {name: encode.encode_dataset(audio_dir, tmp_path / name, encoder,
                                      'random:0', **settings)
          for name, encoder in (('torch', encode.TorchEncoder(model, 'cpu')),
                                ('jax', encode.JaxEncoder(converted)))}
  assert [made[name].encoder for name in made] == ['torch', 'jax']
  songs = {name: [(s.id, s.split, s.frames) for s in manifest.songs]
           for name, manifest in made.items()}
  assert songs['jax'] == songs['torch'] and len(songs['jax']) == 3
  for song in made['torch'].songs:
    expected, actual = (np.load(tmp_path / name / song.shard)
                        for name in ('torch', 'jax'))
    assert np.max(np.abs(actual - expected)) <= 1e-4 * np.max(
        np.abs(expected)), song.id
  assert ((tmp_path / 'jax/decoder.msgpack').read_bytes() ==
          (tmp_path / 'torch/decoder.msgpack').read_bytes())
  with pytest.raises(ValueError, match=(
      '--encoder torch: .*jax holds songs encoded with --encoder jax .*'
      'pass --encoder jax, or use another --out-dir')):
    encode.encode_dataset(audio_dir, tmp_path / 'jax',
                          encode.TorchEncoder(model, 'cpu'), 'random:0',
                          **settings)
  assert latents.LatentDataset(tmp_path / 'jax').manifest == made['jax']
  # A rerun with the same encoder reuses every song.
  shards = {song.shard: os.stat(tmp_path / 'jax' / song.shard).st_mtime_ns
            for song in made['jax'].songs}
  assert encode.encode_dataset(audio_dir, tmp_path / 'jax',
                               encode.JaxEncoder(converted), 'random:0',
                               **settings) == made['jax']
  assert shards == {shard: os.stat(tmp_path / 'jax' / shard).st_mtime_ns
                    for shard in shards}


def whole_file_24khz(path):
  """The reference path: the whole file read, channels averaged, resampled
  at once."""
  samples, rate = soundfile.read(path, dtype='float32', always_2d=True)
  return torchaudio.functional.resample(
      torch.from_numpy(samples.mean(1)), rate, 24_000).numpy()


def test_streaming_equals_the_whole_file_path(audio_dir, dataset_dir, model,
                                              monkeypatch):
  """Latents streamed in blocks (seams every second here) are those of the
  whole file resampled at once, to float16 storage precision."""
  songs = {s.source: s for split in latents.SPLITS
           for s in latents.LatentDataset(dataset_dir).songs(split)}
  monkeypatch.setattr(audio, 'BLOCK_SECONDS', 1)
  for source in GOOD:
    whole = whole_file_24khz(audio_dir / source)
    streamed = np.concatenate(list(audio.MonoStream(audio_dir / source)))
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    expected = np.concatenate(list(codec.encode(model, [whole], device='cpu',
                                                batch_size=4)))
    stored = songs[source].latents.astype(np.float32)
    np.testing.assert_allclose(stored, expected, rtol=2**-10, atol=1e-6)
    # EnCodec is causal: a clip's first second encodes alike alone.
    for clip in (0, 1):
      start = clip * encodec_decoding.CHUNK_FRAMES
      second = torch.from_numpy(whole[start * latents.HOP:][:24_000])
      with torch.inference_mode():
        alone = model.encoder(second[None, None])[0].T.numpy()
      np.testing.assert_allclose(stored[start:start + 75], alone, atol=1e-3,
                                 rtol=1e-2)


def test_44_1_khz_lengths_are_counted_once_and_exactly(tmp_path):
  """The issue's 557 s file: 24,572,469 samples give 13,372,773 at 24 kHz,
  where torchaudio's whole-file resampling gives 13,372,772."""
  length = 24_572_469
  path = tmp_path / 'long.wav'
  soundfile.write(path, 0.1 * np.sin(0.01 * np.arange(length)), 44_100,
                  subtype='PCM_16')
  stream = audio.MonoStream(path)
  assert sum(len(block) for block in stream) == stream.samples == 13_372_773


@pytest.fixture(scope='module')
def formats_dir(tmp_path_factory):
  """Short songs of the formats and shapes users have."""
  path = tmp_path_factory.mktemp('formats')
  song = synth.render_song(7, 0, 3.0, 44_100)
  soundfile.write(path / 'stereo.mp3', np.stack([song, song[::-1]], 1), 44_100,
                  format='MP3', subtype='MPEG_LAYER_III')
  soundfile.write(path / 'voice.opus', synth.render_song(7, 1, 3.0, 48_000),
                  48_000, format='OGG', subtype='OPUS')
  surround = np.stack([synth.render_song(7, 2 + i, 3.0, 44_100)
                       for i in range(6)], 1)
  soundfile.write(path / 'surround_5.1.wav', surround, 44_100,
                  subtype='FLOAT')
  soundfile.write(path / 'mean_of_5.1.wav', surround.mean(1), 44_100,
                  subtype='FLOAT')
  rounding = synth.render_song(7, 8, ROUNDING / 44_100, 44_100)
  assert len(rounding) == ROUNDING
  soundfile.write(path / 'rounding_44k.flac', rounding, 44_100)
  # A 6 s wav cut in half: its header still says 6 s.
  soundfile.write(path / 'cut_44k.wav', synth.render_song(7, 9, 6.0, 44_100),
                  44_100, subtype='PCM_16')
  whole = (path / 'cut_44k.wav').read_bytes()
  (path / 'cut_44k.wav').write_bytes(whole[:44 + (len(whole) - 44) // 2])
  return path


def test_formats_channel_counts_and_short_songs(formats_dir, model, tmp_path,
                                                caplog):
  manifest = encode.encode_dataset(
      formats_dir, tmp_path, encode.TorchEncoder(model, 'cpu'), 'random:0',
      min_seconds=2.0, **SETTINGS)
  assert manifest.skipped == () and manifest.min_seconds == 2.0
  songs = {s.source: s for s in manifest.songs}
  assert sorted(songs) == ['cut_44k.wav', 'mean_of_5.1.wav',
                           'rounding_44k.flac', 'stereo.mp3',
                           'surround_5.1.wav', 'voice.opus']
  for source in ('stereo.mp3', 'voice.opus', 'cut_44k.wav'):
    assert songs[source].duration == pytest.approx(3.0, abs=0.1), source
  # The cut file is kept with the audio it has, and flagged; no other is.
  assert {source: song.header_seconds for source, song in songs.items()
          if song.header_seconds is not None} == {'cut_44k.wav': 6.0}
  assert [record.getMessage() for record in caplog.records
          if 'truncated' in record.getMessage()] == [
              'cut_44k.wav is truncated: its header says 6.00 s, its audio '
              f'ends at {songs["cut_44k.wav"].duration:.2f} s; kept with the '
              "audio it has (the manifest's header_seconds flags it)"]
  # Six channels are averaged.
  dataset = latents.LatentDataset(tmp_path)
  clips = {s.source: s.latents for split in latents.SPLITS
           for s in dataset.songs(split)}
  np.testing.assert_array_equal(clips['surround_5.1.wav'],
                                clips['mean_of_5.1.wav'])
  # One computation of the length: exact, where torchaudio's is one short.
  assert len(whole_file_24khz(formats_dir / 'rounding_44k.flac')) == (
      -(-ROUNDING * 80 // 147) - 1)
  assert songs['rounding_44k.flac'].duration * 24_000 == (
      -(-ROUNDING * 80 // 147))


def fake_encode(model, blocks, *, device, batch_size):
  """Latents without EnCodec: the mean sample of each frame, 128 times."""
  del model, device, batch_size
  pending = np.zeros(0, np.float32)
  for block in blocks:
    pending = np.concatenate([pending, block])
    whole = len(pending) // 320 * 320
    yield np.repeat(pending[:whole].reshape(-1, 320).mean(1, keepdims=True),
                    128, 1)
    pending = pending[whole:]


@functools.cache
def random_encodec():
  """The model whose decoder the runs with fake_encode write."""
  return encodec_weights.random_model(0).eval()


def run(audio_dir, out_dir, **settings):
  return encode.encode_dataset(
      audio_dir, out_dir, encode.TorchEncoder(random_encodec(), 'cpu'),
      'random:0', **SETTINGS, **settings)


def test_a_song_failing_midway_is_reported_and_the_others_kept(
    audio_dir, tmp_path, monkeypatch):
  def failing(model, stream, **kwargs):
    for index, block in enumerate(fake_encode(model, stream, **kwargs)):
      if index == 1 and stream.path.endswith('mono_44k.wav'):
        raise RuntimeError('lost sync in the middle')
      yield block

  monkeypatch.setattr(codec, 'encode', failing)
  manifest = run(audio_dir, tmp_path)
  assert sorted(s.source for s in manifest.songs) == sorted(
      set(GOOD) - {'mono_44k.wav'})
  reasons = {s.source: s.reason for s in manifest.skipped}
  assert reasons['mono_44k.wav'] == (
      'failed while encoding: RuntimeError: lost sync in the middle')
  assert not [name for name in os.listdir(tmp_path) if 'mono_44k' in name]


def test_interrupted_run_resumes_to_identical_output(audio_dir, tmp_path,
                                                     monkeypatch):
  calls = []

  def encode_until(limit):
    def counted(model, stream, **kwargs):
      if len(calls) == limit:
        raise KeyboardInterrupt  # killed while encoding song `limit`
      calls.append(stream.path)
      return fake_encode(model, stream, **kwargs)
    return counted

  monkeypatch.setattr(codec, 'encode', encode_until(99))
  run(audio_dir, tmp_path / 'whole')
  calls.clear()
  monkeypatch.setattr(codec, 'encode', encode_until(1))
  with pytest.raises(KeyboardInterrupt):
    run(audio_dir, tmp_path / 'resumed')
  resumed = tmp_path / 'resumed'
  assert not (resumed / 'manifest.json').exists()
  first = os.stat(resumed / 'song-live__stereo_48k.npy').st_mtime_ns
  calls.clear()
  monkeypatch.setattr(codec, 'encode', encode_until(99))
  run(audio_dir, resumed)
  # The finished song is reused; the others (the short one included) and
  # the bad files, which leave nothing, are read again.
  assert len(calls) == 4
  assert os.stat(resumed / 'song-live__stereo_48k.npy').st_mtime_ns == first
  names = sorted(os.listdir(tmp_path / 'whole'))
  assert sorted(os.listdir(resumed)) == names
  for name in names:
    assert ((resumed / name).read_bytes()
            == (tmp_path / 'whole' / name).read_bytes()), name


def test_workers_side_by_side_give_the_one_worker_dataset(
    audio_dir, tmp_path, monkeypatch):
  """Two workers share the songs; the last to finish writes what one
  worker writes, byte for byte, beside their worker-I-of-2.json."""
  calls = []

  def counted(model, stream, **kwargs):
    calls.append(stream.path)
    return fake_encode(model, stream, **kwargs)

  monkeypatch.setattr(codec, 'encode', counted)
  one = run(audio_dir, tmp_path / 'one')
  assert len(calls) == 5  # the good songs, the short and the silent one
  calls.clear()
  assert run(audio_dir, tmp_path / 'two', num_workers=2,
             worker_index=1) is None
  assert not (tmp_path / 'two' / 'manifest.json').exists()
  shares = [sorted(calls)]
  calls.clear()
  assert run(audio_dir, tmp_path / 'two', num_workers=2,
             worker_index=0) == one
  shares.append(sorted(calls))
  # Disjoint shares; the last worker reuses the songs and the failures.
  assert len(shares[0] + shares[1]) == len(set(shares[0] + shares[1])) == 5
  assert all(shares)
  names = sorted(os.listdir(tmp_path / 'one'))
  assert sorted(os.listdir(tmp_path / 'two')) == sorted(
      names + ['worker-0-of-2.json', 'worker-1-of-2.json'])
  for name in names:
    assert ((tmp_path / 'one' / name).read_bytes()
            == (tmp_path / 'two' / name).read_bytes()), name
  with pytest.raises(ValueError, match='--worker-index 2: expected 0 to '
                     '--num-workers 2 - 1'):
    run(audio_dir, tmp_path / 'two', num_workers=2, worker_index=2)


def test_kept_audio_is_the_encoded_waveform(audio_dir, tmp_path,
                                            monkeypatch):
  calls = []

  def counted(model, blocks, **kwargs):
    calls.append(1)
    return fake_encode(model, blocks, **kwargs)

  monkeypatch.setattr(codec, 'encode', counted)
  manifest = run(audio_dir, tmp_path, keep_audio=True)
  dataset = latents.LatentDataset(tmp_path)
  # The short and the silent song are read to the end too.
  assert dataset.has_audio and len(calls) == 5
  for song in dataset.songs('train') + dataset.songs('val'):
    expected = whole_file_24khz(audio_dir / song.source)
    assert song.audio.shape == (len(song.latents), 320)
    # fake_encode's latents are the frames' mean samples.
    np.testing.assert_allclose(
        song.audio.astype(np.float32).mean(1), song.latents[:, 0],
        atol=2e-3)
    np.testing.assert_allclose(song.audio.reshape(-1),
                               expected[:song.audio.size], atol=1e-3)
  assert [song.audio for song in manifest.songs] == [
      f'song-{song.id}.audio.npy' for song in manifest.songs]
  calls.clear()
  assert run(audio_dir, tmp_path, keep_audio=True) == manifest
  assert len(calls) == 1  # the silent file, which left nothing to reuse
  # Without --keep-audio the songs are encoded again, and no audio is left.
  calls.clear()
  assert run(audio_dir, tmp_path).songs[0].audio is None
  assert len(calls) == 5
  assert not [name for name in os.listdir(tmp_path) if 'audio' in name]


def cli(audio_dir, out_dir, *more, wait=True):
  command = [sys.executable, '-m', 'precompute.encode', '--audio-dir',
             str(audio_dir), '--out-dir', str(out_dir), *CLI_SETTINGS, *more]
  if not wait:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


def test_cli_killed_and_rerun_gives_identical_files(audio_dir, tmp_path):
  whole = cli(audio_dir, tmp_path / 'whole')
  assert whole.returncode == 0, whole.stderr
  assert 'SEEDED RANDOM (seed 0)' in whole.stderr
  assert '9/9' in whole.stderr and '3 kept' in whole.stderr
  killed = cli(audio_dir, tmp_path / 'killed', wait=False)
  deadline = time.monotonic() + 120
  while not (tmp_path / 'killed' / 'song-live__stereo_48k.json').exists():
    assert killed.poll() is None and time.monotonic() < deadline
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)  # while encoding the next song
  killed.wait()
  # What a writer killed at any point leaves, and another writer's file.
  (tmp_path / 'killed' / '.song-x.npy.0123abcd.tmp').write_bytes(b'\0' * 64)
  (tmp_path / 'killed' / 'notes.tmp').write_text('not ours')
  rerun = cli(audio_dir, tmp_path / 'killed')
  assert rerun.returncode == 0, rerun.stderr
  names = sorted(os.listdir(tmp_path / 'whole'))
  assert sorted(os.listdir(tmp_path / 'killed')) == sorted(names +
                                                           ['notes.tmp'])
  for name in names:
    assert ((tmp_path / 'killed' / name).read_bytes()
            == (tmp_path / 'whole' / name).read_bytes()), name

  # A rerun of a finished dataset encodes nothing and rewrites nothing.
  shards = {name: os.stat(tmp_path / 'whole' / name).st_mtime_ns
            for name in names if name.startswith('song-')}
  again = cli(audio_dir, tmp_path / 'whole')
  assert again.returncode == 0 and '0 s encoded now' in again.stderr
  assert shards == {name: os.stat(tmp_path / 'whole' / name).st_mtime_ns
                    for name in shards}


def test_cli_errors_name_the_flag(tmp_path):
  result = cli(tmp_path / 'nowhere', tmp_path / 'out')
  assert result.returncode == 1
  assert f'--audio-dir {tmp_path / "nowhere"}: not a directory' in (
      result.stderr)
  assert 'Traceback' not in result.stderr
  os.makedirs(tmp_path / 'audio')
  result = cli(tmp_path / 'audio', tmp_path / 'out', '--min-seconds', '0')
  assert '--min-seconds 0.0: expected > 0' in result.stderr


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


@pytest.mark.parametrize('rate', [8_000, 11_025, 22_050, 32_000, 44_056,
                                  44_100, 48_000, 88_200, 96_000, 192_000])
def test_streamed_resampling_is_torchaudios_of_the_whole(rate):
  samples = np.random.default_rng(rate).uniform(
      -0.5, 0.5, 2 * rate + 1237).astype(np.float32)
  resampler = audio.Resampler(rate)
  blocks = np.split(samples, [1000, 1001, 8000, rate])
  streamed = np.concatenate([resampler.push(b) for b in blocks] +
                            [resampler.flush()])
  whole = torchaudio.functional.resample(torch.from_numpy(samples), rate,
                                         24_000).numpy()
  assert len(streamed) == -(-len(samples) * 24_000 // rate) == len(whole)
  np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_resampling_is_band_limited():
  def tone(hz, rate, seconds=1.0):
    return np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate
                  ).astype(np.float32)

  def resampled(samples, rate):
    resampler = audio.Resampler(rate)
    return np.concatenate([resampler.push(samples), resampler.flush()])

  kept = resampled(tone(1000, 44_100), 44_100)
  assert len(kept) == 24_000
  np.testing.assert_allclose(kept[500:-500], tone(1000, 24_000)[500:-500],
                             atol=2e-3)
  # Above the 12 kHz Nyquist frequency of 24 kHz: filtered out, not aliased
  # to 9 kHz.
  removed = resampled(tone(15_000, 48_000), 48_000)
  assert np.sqrt(np.mean(removed[500:-500] ** 2)) < 1e-2
  assert len(resampled(np.zeros(1001, np.float32), 44_100)) == 545
  with pytest.raises(audio.BadAudio, match='44101 Hz.*filter bank'):
    audio.Resampler(44_101)
