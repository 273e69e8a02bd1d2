"""The latent dataset format: writer -> reader round trip, reuse, errors."""

import json
import os

import numpy as np
import pytest

from jingle_jax import latents

D = latents.LATENT_DIM


def song(song_id, split, frames, rng, scale=1.0):
  record = {'id': song_id, 'source': f'music/{song_id}.wav', 'split': split,
            'duration': frames / latents.FRAME_RATE}
  return record, (scale * rng.normal(size=(frames, D))).astype(np.float32)


def write(path, shards, dtype='float16', weights='random:0'):
  """Writes {shard name: [(record, latents)]}; returns the manifest."""
  writer = latents.DatasetWriter(path, encodec_weights=weights, dtype=dtype)
  for name, songs in shards.items():
    writer.write_shard(name, songs)
  return writer.finish(skipped=[{'source': 'bad.wav', 'reason': 'empty'}])


@pytest.fixture
def shards():
  rng = np.random.default_rng(0)
  return {'shard_00000': [song('a', 'train', 90, rng, 3.0),
                          song('b', 'val', 40, rng)],
          'shard_00001': [song('c', 'train', 75, rng, 0.5)]}


@pytest.mark.parametrize('dtype', ['float16', 'float32'])
def test_round_trip(tmp_path, shards, dtype):
  manifest = write(tmp_path, shards, dtype)
  dataset = latents.LatentDataset(tmp_path / 'manifest.json')
  assert dataset.manifest == manifest
  assert manifest['encodec_weights'] == 'random:0'
  assert manifest['skipped'] == [{'source': 'bad.wav', 'reason': 'empty'}]
  assert [(s['shard'], s['offset']) for s in manifest['songs']] == [
      ('shard_00000.npy', 0), ('shard_00000.npy', 90), ('shard_00001.npy', 0)]
  written = {record['id']: values for shard in shards.values()
             for record, values in shard}
  train, val = dataset.songs('train'), dataset.songs('val')
  assert [s.id for s in train] == ['a', 'c'] and [s.id for s in val] == ['b']
  for item in train + val:
    assert item.latents.dtype == dtype and not item.latents.flags.writeable
    assert item.source == f'music/{item.id}.wav'
    assert item.duration == len(item.latents) / latents.FRAME_RATE
    np.testing.assert_array_equal(item.latents,
                                  written[item.id].astype(dtype))
  # Statistics of the training songs only, as stored.
  frames = np.concatenate([written[i].astype(dtype) for i in 'ac'])
  np.testing.assert_allclose(dataset.mean, frames.mean(0, np.float64),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dataset.std, frames.std(0, dtype=np.float64),
                             rtol=1e-5)
  assert dataset.mean.dtype == dataset.std.dtype == np.float32
  with pytest.raises(latents.LatentDataError, match='test'):
    dataset.songs('test')


def test_reuse_shard_only_when_songs_and_settings_match(tmp_path, shards):
  manifest = write(tmp_path, shards)
  records = {name: [record for record, _ in songs]
             for name, songs in shards.items()}
  writer = latents.DatasetWriter(tmp_path, encodec_weights='random:0')
  assert not (tmp_path / 'manifest.json').exists()  # unfinished again
  assert all(writer.reuse_shard(name, songs)
             for name, songs in records.items())
  assert writer.finish(manifest['skipped']) == manifest

  changed = [dict(records['shard_00001'][0], duration=2.0)]
  assert not writer.reuse_shard('shard_00001', changed)
  other = latents.DatasetWriter(tmp_path, encodec_weights='random:1')
  assert not other.reuse_shard('shard_00001', records['shard_00001'])
  wider = latents.DatasetWriter(tmp_path, encodec_weights='random:0',
                                dtype='float32')
  assert not wider.reuse_shard('shard_00001', records['shard_00001'])
  os.remove(tmp_path / 'shard_00000.json')  # killed between the two files
  assert not writer.reuse_shard('shard_00000', records['shard_00000'])


def test_a_shard_left_half_rewritten_is_not_reused(tmp_path, shards,
                                                   monkeypatch):
  write(tmp_path, shards)
  records = [record for record, _ in shards['shard_00001']]

  def killed(*args):
    raise KeyboardInterrupt

  monkeypatch.setattr(latents, '_write_json', killed)
  other = latents.DatasetWriter(tmp_path, encodec_weights='random:1')
  with pytest.raises(KeyboardInterrupt):  # after the .npy, before the .json
    other.write_shard('shard_00001', shards['shard_00001'])
  monkeypatch.undo()
  writer = latents.DatasetWriter(tmp_path, encodec_weights='random:0')
  assert writer.reuse_shard('shard_00000', [r for r, _ in
                                            shards['shard_00000']])
  assert not writer.reuse_shard('shard_00001', records)


def test_a_new_split_reuses_shards(tmp_path, shards):
  write(tmp_path, shards)
  writer = latents.DatasetWriter(tmp_path, encodec_weights='random:0')
  for name, songs in shards.items():
    assert writer.reuse_shard(name, [dict(record, split='train')
                                     for record, _ in songs])
  writer.finish([])
  assert not latents.LatentDataset(tmp_path).songs('val')


def corrupt_truncate(path):
  with open(path / 'shard_00001.npy', 'r+b') as f:
    f.truncate(os.path.getsize(path / 'shard_00001.npy') - 100)


def corrupt_nonfinite(path):
  shard = np.load(path / 'shard_00001.npy', mmap_mode='r+')
  shard[3, 7] = np.nan
  shard.flush()


def corrupt_dtype(path):
  shard = np.load(path / 'shard_00001.npy')
  np.save(path / 'shard_00001.npy', shard.astype(np.float32))


def corrupt_shape(path):
  shard = np.load(path / 'shard_00001.npy')
  np.save(path / 'shard_00001.npy', shard[:, :64])


def corrupt_short(path):
  shard = np.load(path / 'shard_00001.npy')
  np.save(path / 'shard_00001.npy', shard[:50])


@pytest.mark.parametrize('corrupt, message', [
    (lambda p: os.remove(p / 'shard_00001.npy'), 'missing'),
    (corrupt_truncate, 'truncated'),
    (corrupt_nonfinite, 'non-finite'),
    (corrupt_dtype, 'dtype float32'),
    (corrupt_shape, 'shape'),
    (corrupt_short, 'ends at 75'),
])
def test_bad_shard_names_the_file(tmp_path, shards, corrupt, message):
  write(tmp_path, shards)
  corrupt(tmp_path)
  with pytest.raises(latents.LatentDataError) as error:
    latents.LatentDataset(tmp_path)
  assert str(tmp_path / 'shard_00001.npy') in str(error.value)
  assert message in str(error.value)


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
])
def test_bad_manifest_names_file_and_field(tmp_path, shards, edit, message):
  manifest = write(tmp_path, shards)
  edit(manifest)
  with open(tmp_path / 'manifest.json', 'w') as f:
    json.dump(manifest, f)
  with pytest.raises(latents.LatentDataError) as error:
    latents.LatentDataset(tmp_path)
  assert str(tmp_path / 'manifest.json') in str(error.value)
  assert message in str(error.value)


def test_missing_or_broken_manifest(tmp_path, shards):
  with pytest.raises(latents.LatentDataError, match='no such manifest'):
    latents.LatentDataset(tmp_path)
  write(tmp_path, shards)
  with open(tmp_path / 'manifest.json', 'a') as f:
    f.write('}')
  with pytest.raises(latents.LatentDataError, match='unreadable manifest'):
    latents.LatentDataset(tmp_path)


def test_writer_refuses_bad_songs(tmp_path):
  rng = np.random.default_rng(1)
  writer = latents.DatasetWriter(tmp_path, encodec_weights='random:0')
  record, values = song('x', 'train', 10, rng)
  with pytest.raises(ValueError, match="'x'.*non-finite values as float16"):
    writer.write_shard('s', [(record, values + 1e5)])  # float16 overflow
  with pytest.raises(ValueError, match="'x'.*shape"):
    writer.write_shard('s', [(record, values.T)])
  with pytest.raises(ValueError, match='plain file stem'):
    writer.write_shard('../s', [(record, values)])
  assert os.listdir(tmp_path) == []
  writer.write_shard('s', [(dict(record, split='val'), values)])
  with pytest.raises(ValueError, match='no training songs'):
    writer.finish([])
  writer.write_shard('t', [(record, values)])
  writer.write_shard('u', [(record, values)])
  with pytest.raises(ValueError, match='not unique'):
    writer.finish([])
  with pytest.raises(ValueError, match='dtype'):
    latents.DatasetWriter(tmp_path, encodec_weights='random:0',
                          dtype='bfloat16')


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
  path = tmp_path / 'file.txt'
  with latents.atomic_write(path, 'w') as f:
    f.write('old')
  with pytest.raises(RuntimeError):
    with latents.atomic_write(path, 'w') as f:
      f.write('new, half written')
      raise RuntimeError('killed')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['file.txt']
