"""The latent dataset format: writer -> reader round trip, reuse, errors."""

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jingle_jax.core import files
from jingle_jax.data import latent_writer
from jingle_jax.data import latents
from jingle_jax.data import npy_rows
import latent_data
from small_filesystem import small_filesystem

D = latents.LATENT_DIM
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SKIPPED = [{'source': 'bad.wav', 'reason': 'empty'}]


def write(path, songs, dtype='float16', weights='random:0'):
  """Writes {id: (split, latents)} from music/<id>.wav; returns the
  manifest."""
  return latent_data.write_dataset(path, songs, weights=weights, dtype=dtype,
                                   skipped=SKIPPED, source='music/{}.wav')


@pytest.fixture
def songs():
  rng = np.random.default_rng(0)
  return {'a': ('train', 3.0 * rng.normal(size=(90, D))),
          'b': ('val', rng.normal(size=(40, D))),
          'c': ('train', 0.5 * rng.normal(size=(75, D)))}


@pytest.mark.parametrize('dtype', ['float16', 'float32'])
def test_round_trip(tmp_path, songs, dtype):
  manifest = write(tmp_path, songs, dtype)
  dataset = latents.LatentDataset(tmp_path / 'manifest.json')
  assert dataset.manifest == manifest
  assert manifest.encodec_weights == 'random:0'
  assert [dataclasses.asdict(file) for file in manifest.skipped] == SKIPPED
  assert [(s.shard, s.offset) for s in manifest.songs] == [
      ('song-a.npy', 0), ('song-b.npy', 0), ('song-c.npy', 0)]
  train, val = dataset.songs('train'), dataset.songs('val')
  assert [s.id for s in train] == ['a', 'c'] and [s.id for s in val] == ['b']
  for item in train + val:
    assert item.latents.dtype == dtype and not item.latents.flags.writeable
    assert item.source == f'music/{item.id}.wav'
    assert item.duration == len(item.latents) / latents.FRAME_RATE
    np.testing.assert_array_equal(item.latents,
                                  songs[item.id][1].astype(dtype))
  # Statistics of the training songs only, as stored.
  frames = np.concatenate([songs[i][1].astype(dtype) for i in 'ac'])
  np.testing.assert_allclose(dataset.mean, frames.mean(0, np.float64),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dataset.std, frames.std(0, dtype=np.float64),
                             rtol=1e-5)
  assert dataset.mean.dtype == dataset.std.dtype == np.float32
  with pytest.raises(latents.LatentDataError, match='test'):
    dataset.songs('test')


def test_a_song_written_in_blocks_is_the_npy_file_of_its_latents(tmp_path):
  values = np.random.default_rng(2).normal(size=(1234, D)).astype(np.float16)
  writer = latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0')
  with writer.song('x', 'x.wav') as song:
    for block in np.split(values, [500, 501]):
      song.append(block)
    assert song.commit(1234 / 75) == {'id': 'x', 'source': 'x.wav',
                                      'duration': 1234 / 75, 'frames': 1234}
  np.save(tmp_path / 'expected.npy', values)
  assert ((tmp_path / 'song-x.npy').read_bytes() ==
          (tmp_path / 'expected.npy').read_bytes())


def test_cached_only_when_source_and_settings_match(tmp_path, songs):
  manifest = write(tmp_path, songs)
  writer = latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0')
  assert not (tmp_path / 'manifest.json').exists()  # unfinished again
  records = [writer.cached(song_id, f'music/{song_id}.wav')
             for song_id in songs]
  assert [r['frames'] for r in records] == [90, 40, 75]
  splits = [split for split, _ in songs.values()]
  assert writer.finish([dict(r, split=split) for r, split in
                        zip(records, splits)], SKIPPED, None) == manifest
  assert writer.cached('c', 'music/other.wav') is None
  assert writer.cached('c', 'music/c.wav', {'size': 1}) is None
  for other in (dict(encodec_weights='random:1'),
                dict(encodec_weights='random:0', dtype='float32')):
    assert latent_writer.DatasetWriter(tmp_path, **other).cached(
        'c', 'music/c.wav') is None
  os.remove(tmp_path / 'song-a.json')  # killed between the two files
  assert writer.cached('a', 'music/a.wav') is None


def test_a_song_left_unfinished_is_not_reused(tmp_path, songs, monkeypatch):
  write(tmp_path, songs)
  other = latent_writer.DatasetWriter(tmp_path, encodec_weights='random:1')
  with pytest.raises(KeyboardInterrupt):  # killed while writing
    with other.song('b', 'music/b.wav') as song:
      song.append(songs['b'][1])
      raise KeyboardInterrupt
  monkeypatch.setattr(files, 'write_json', _killed)
  with pytest.raises(KeyboardInterrupt):  # after the .npy, before the .json
    with other.song('c', 'music/c.wav') as song:
      song.append(songs['c'][1])
      song.commit(1.0)
  monkeypatch.undo()
  writer = latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0')
  assert writer.cached('a', 'music/a.wav') is not None
  assert writer.cached('b', 'music/b.wav') is None
  assert writer.cached('c', 'music/c.wav') is None
  assert sorted(os.listdir(tmp_path)) == [
      'song-a.json', 'song-a.npy', 'song-b.npy', 'song-c.npy']


def _killed(*args):
  raise KeyboardInterrupt


SHARD = 'song-c.npy'


def corrupt_truncate(path):
  with open(path / SHARD, 'r+b') as f:
    f.truncate(os.path.getsize(path / SHARD) - 100)


def corrupt_dtype(path):
  shard = np.load(path / SHARD)
  np.save(path / SHARD, shard.astype(np.float32))


def corrupt_shape(path):
  shard = np.load(path / SHARD)
  np.save(path / SHARD, shard[:, :64])


def corrupt_short(path):
  shard = np.load(path / SHARD)
  np.save(path / SHARD, shard[:50])


@pytest.mark.parametrize('corrupt, message', [
    (lambda p: os.remove(p / SHARD), 'missing'),
    (corrupt_truncate, 'truncated'),
    (corrupt_dtype, 'dtype float32'),
    (corrupt_shape, 'shape'),
    (corrupt_short, 'ends at 75'),
])
def test_bad_shard_names_the_file(tmp_path, songs, corrupt, message):
  write(tmp_path, songs)
  corrupt(tmp_path)
  with pytest.raises(latents.LatentDataError) as error:
    latents.LatentDataset(tmp_path)
  assert str(tmp_path / SHARD) in str(error.value)
  assert message in str(error.value)


def test_a_header_damaged_in_place_is_refused_when_first_read(tmp_path,
                                                              songs):
  """A file of the expected size is trusted when opened: what its header
  says is checked when the song is first read."""
  write(tmp_path, songs)
  values = np.load(tmp_path / SHARD)
  np.save(tmp_path / SHARD, values.view(np.float32))  # [75, 64], same size
  song = latents.LatentDataset(tmp_path).songs('train')[1]
  with pytest.raises(latents.LatentDataError,
                     match=rf'{SHARD}: shape \(75, 64\), expected'):
    song.read(0, 10)


def set_value(path, frame, channel, value):
  shard = np.load(path, mmap_mode='r+')
  shard[frame, channel] = value
  shard.flush()


def test_values_are_checked_as_they_are_read(tmp_path, songs):
  """Opening reads no value; reading refuses a non-finite one or one far
  from the statistics, naming the file, song and frame."""
  write(tmp_path, songs)
  path = tmp_path / 'song-b.npy'
  set_value(path, 5, 3, 200.0)  # about 100 standard deviations: kept
  song = latents.LatentDataset(tmp_path).songs('val')[0]
  assert song.read(0, 10)[5, 3] == 200.0
  song.verify()
  set_value(path, 5, 3, 65504.0)  # float16's largest, e.g. an overflow
  set_value(path, 30, 1, np.inf)
  song = latents.LatentDataset(tmp_path).songs('val')[0]
  np.testing.assert_array_equal(song.read(0, 5), songs['b'][1][:5].astype(
      np.float16))
  with pytest.raises(latents.LatentDataError) as error:
    song.read(2, 10)
  assert str(error.value).startswith(
      f"{path}: song 'b': frame 5, channel 3 is 65504, ")
  assert 'standard deviations from the training latents\' mean' in str(
      error.value)
  with pytest.raises(latents.LatentDataError, match=(
      f"{path}: song 'b': frame 30, channel 1 is inf, not finite")):
    song.read(20, 40)
  with pytest.raises(latents.LatentDataError, match='frame 5, channel 3'):
    song.verify()


def test_the_writer_refuses_latents_far_from_the_statistics(tmp_path, songs):
  """Checked against the statistics of the finished dataset, so a val song
  too."""
  values = songs['b'][1].copy()
  values[7, 9] = 60000.0
  with pytest.raises(latents.LatentDataError) as error:
    write(tmp_path, dict(songs, b=('val', values)))
  assert str(error.value).startswith(
      f"{tmp_path / 'song-b.npy'}: song 'b': frame 7, channel 9 is 60000, ")
  assert not (tmp_path / 'manifest.json').exists()


MANY_SONGS = """
import sys
import numpy as np
from jingle_jax.data import input_pipeline, latents
dataset = latents.LatentDataset(sys.argv[1])
pairs = input_pipeline.Pairs(dataset.songs('train'), 4, 4,
                             target_audio=True)
order = np.random.default_rng(0).permutation(len(pairs))
for start in range(0, len(pairs), 100):
  batch = pairs.read(order[start:start + 100], order[start:start + 100])
songs = dataset.songs('train')
for index in order[:300] % len(songs):  # through memory maps
  songs[index].read(), songs[index].audio
print(len(pairs), len(batch['target_audio']), latents.OPEN_MAPS)
"""


def test_any_number_of_songs_under_a_low_open_file_limit(tmp_path):
  """1,000 songs with their audio, read in random order with 64 open files
  allowed: the dataset keeps fewer maps open than that leaves."""
  rng = np.random.default_rng(0)
  songs = {f's{i:04d}': ('train', rng.normal(size=(8, D)))
           for i in range(1000)}
  latent_data.write_dataset(tmp_path, songs, audio={
      song_id: rng.uniform(-1, 1, 8 * latents.HOP) for song_id in songs})
  result = subprocess.run(['bash', '-c', 'ulimit -n 64 && exec "$@"', 'bash',
                           sys.executable, '-c', MANY_SONGS, str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['1000', '100', '16']


@pytest.mark.parametrize('edit, message', [
    (lambda m: m.pop('songs'), "field 'songs'"),
    (lambda m: m.update(format_version=2), 'format_version 2'),
    (lambda m: m.update(latent_dim=64), "'latent_dim' is 64"),
    (lambda m: m.update(dtype='int8'), "'dtype'"),
    (lambda m: m['songs'][1].update(split='test'), "songs[1]: field 'split'"),
    (lambda m: m['songs'][0].update(frames='90'), "songs[0]: field 'frames'"),
    (lambda m: m['songs'][0].update(duration=3.0), 'do not match'),
    (lambda m: m['songs'][2].update(shard='../x.npy'), "field 'shard'"),
    (lambda m: m['songs'][2].update(id='a'), 'not unique'),
    (lambda m: m.update(std=[0.0] * D), "'std'"),
    (lambda m: m.update(mean=[1.0] * 3), "'mean'"),
    (lambda m: m.update(decoder='../d.msgpack'), "field 'decoder'"),
    (lambda m: m['skipped'][0].pop('reason'), "skipped[0]: field 'reason'"),
])
def test_bad_manifest_names_file_and_field(tmp_path, songs, edit, message):
  manifest = write(tmp_path, songs).to_json()
  edit(manifest)
  with open(tmp_path / 'manifest.json', 'w') as f:
    json.dump(manifest, f)
  with pytest.raises(latents.LatentDataError) as error:
    latents.LatentDataset(tmp_path)
  assert str(tmp_path / 'manifest.json') in str(error.value)
  assert message in str(error.value)


def test_missing_or_broken_manifest(tmp_path, songs):
  with pytest.raises(latents.LatentDataError, match='no manifest'):
    latents.LatentDataset(tmp_path)
  write(tmp_path, songs)
  with open(tmp_path / 'manifest.json', 'a') as f:
    f.write('}')
  with pytest.raises(latents.LatentDataError, match='unreadable manifest'):
    latents.LatentDataset(tmp_path)


def test_writer_refuses_bad_songs(tmp_path):
  values = np.random.default_rng(1).normal(size=(10, D))
  writer = latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0')
  for bad, message in ((values + 1e5, "'x'.*non-finite values as float16"),
                       (values.T, "'x'.*shape")):
    with pytest.raises(ValueError, match=message):
      with writer.song('x', 'x.wav') as song:
        song.append(bad)  # float16 overflow, transposed
  with pytest.raises(ValueError, match='not a plain file name'):
    writer.song('../x', 'x.wav')
  with pytest.raises(ValueError, match="'x': left without commit"):
    with writer.song('x', 'x.wav') as song:
      song.append(values)
  with pytest.raises(ValueError, match="'x': no latent frames"):
    with writer.song('x', 'x.wav') as song:
      song.commit(0.0)
  assert os.listdir(tmp_path) == []
  with writer.song('x', 'x.wav') as song:
    song.append(values)
    record = song.commit(10 / 75)
  with pytest.raises(ValueError, match='no training songs'):
    writer.finish([dict(record, split='val')], [])
  with pytest.raises(ValueError, match='not unique'):
    writer.finish([dict(record, split='train')] * 2, [])
  with pytest.raises(ValueError, match='dtype'):
    latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0',
                          dtype='bfloat16')


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
  path = tmp_path / 'file.txt'
  with files.atomic_write(path, 'w') as f:
    f.write('old')
  with pytest.raises(RuntimeError):
    with files.atomic_write(path, 'w') as f:
      f.write('new, half written')
      raise RuntimeError('killed')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['file.txt']


def audio_of(songs, seed=3):
  """24 kHz samples for each song: its frames' samples and 100 more (the
  encoder drops those after the last whole frame)."""
  rng = np.random.default_rng(seed)
  return {song_id: rng.uniform(-1, 1, len(values) * latents.HOP + 100)
          for song_id, (_, values) in songs.items()}


def test_audio_kept_beside_the_latents_frame_by_frame(tmp_path, songs):
  audio = audio_of(songs)
  manifest = latent_data.write_dataset(tmp_path, songs, audio=audio)
  assert [s.audio for s in manifest.songs] == [
      'song-a.audio.npy', 'song-b.audio.npy', 'song-c.audio.npy']
  dataset = latents.LatentDataset(tmp_path)
  assert dataset.has_audio
  for song in dataset.songs('train') + dataset.songs('val'):
    frames = len(song.latents)
    assert song.audio.shape == (frames, latents.HOP)
    assert song.audio.dtype == np.float16 and not song.audio.flags.writeable
    np.testing.assert_array_equal(
        song.audio.reshape(-1),
        audio[song.id][:frames * latents.HOP].astype(np.float16))
  # Written in blocks of any size, the file is the same.
  writer = latent_writer.DatasetWriter(tmp_path / 'blocks', keep_audio=True,
                                       encodec_weights='random:0')
  with writer.song('a', 'music/a.wav') as song:
    for block in np.split(audio['a'], [1, 500, 20_000]):
      song.append_audio(block)
    song.append(songs['a'][1])
    song.commit(1.2)
  assert ((tmp_path / 'blocks/song-a.audio.npy').read_bytes() ==
          (tmp_path / 'song-a.audio.npy').read_bytes())


def test_audio_caching_and_errors(tmp_path, songs):
  write(tmp_path, songs)  # without audio
  keeping = latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0',
                                        keep_audio=True)
  assert keeping.cached('a', 'music/a.wav') is None  # no audio to reuse
  with pytest.raises(ValueError, match="'a': 3 frames of audio, 90 of"):
    with keeping.song('a', 'music/a.wav') as song:
      song.append_audio(np.zeros(3 * latents.HOP))
      song.append(songs['a'][1])
      song.commit(1.2)
  with pytest.raises(ValueError, match="'a': the writer keeps no audio"):
    with latent_writer.DatasetWriter(tmp_path, encodec_weights='random:0'
                                     ).song('a', 'music/a.wav') as song:
      song.append_audio(np.zeros(10))
  assert latent_data.write_dataset(tmp_path, songs, audio=audio_of(songs),
                                   source='music/{}.wav')
  assert keeping.cached('a', 'music/a.wav')['audio'] == 'song-a.audio.npy'
  os.remove(tmp_path / 'song-a.audio.npy')
  assert keeping.cached('a', 'music/a.wav') is None
  # A song written again without audio leaves no stale audio file.
  write(tmp_path, songs)
  assert not [name for name in os.listdir(tmp_path) if 'audio' in name]
  assert not latents.LatentDataset(tmp_path).has_audio


@pytest.mark.parametrize('corrupt, message', [
    (lambda a: a[:50], r'song-c.audio.npy: 50 frames of audio, song .c. has '
     '75'),
    (lambda a: a.astype(np.float32), 'song-c.audio.npy: dtype float32'),
    (lambda a: a.reshape(-1), r'song-c.audio.npy: shape \(24000,\)'),
])
def test_bad_audio_names_the_file(tmp_path, songs, corrupt, message):
  latent_data.write_dataset(tmp_path, songs, audio=audio_of(songs))
  path = tmp_path / 'song-c.audio.npy'
  np.save(path, corrupt(np.load(path)))
  # When opened, or (the same size: the flat one) when first read.
  with pytest.raises(latents.LatentDataError, match=message):
    latents.LatentDataset(tmp_path).songs('train')[1].check_files()
  os.remove(path)
  with pytest.raises(latents.LatentDataError, match='audio file is missing'):
    latents.LatentDataset(tmp_path)


def test_a_full_disk_names_the_folder_and_a_rerun_with_room_finishes(
    tmp_path, songs):
  with small_filesystem(tmp_path / 'small', '40k') as small:
    if small is None:
      pytest.skip('no tmpfs can be mounted here (tests/test_files.py '
                  'simulates a full disk)')
    with pytest.raises(files.DiskFull) as error:
      write(small, songs)
    assert str(error.value).startswith(
        f'{small}: no space left on its filesystem writing song-')
    assert not [name for name in os.listdir(small) if name.endswith('.tmp')]
    subprocess.run(['mount', '-o', 'remount,size=1m', str(small)], check=True)
    assert write(small, songs) == latents.LatentDataset(small).manifest


def test_headers_are_parsed_one_at_a_time_by_reader_threads(tmp_path,
                                                            monkeypatch):
  """numpy parses .npy headers with ast.literal_eval, which CPython 3.11
  and 3.12 break in concurrent threads: the readers take turns."""
  paths = []
  for i in range(32):
    paths.append(tmp_path / f'{i}.npy')
    np.save(paths[-1], np.zeros((4, 8), np.float16))
  parsing, most = [0], [0]
  parse = np.lib.format.read_array_header_1_0

  def slow_parse(f, *args, **kwargs):
    parsing[0] += 1
    most[0] = max(most[0], parsing[0])
    time.sleep(0.002)  # a window for another thread to enter
    parsing[0] -= 1
    return parse(f, *args, **kwargs)

  monkeypatch.setattr(np.lib.format, 'read_array_header_1_0', slow_parse)
  reader = npy_rows.Reader(latents.LatentDataError)
  out = np.empty((8, 4, 8), np.float16)
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda i: reader.read(paths[i], np.float16, 8, 'shard', 0,
                                        out[i % 8]), range(32)))
  assert most[0] == 1
  assert not out.any()
