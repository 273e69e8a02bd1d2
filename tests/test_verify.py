"""python -m jingle_jax.verify: every value of a dataset, on processes."""

import os
import subprocess
import sys

import numpy as np

import latent_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_verify_names_every_bad_song_in_one_line(tmp_path):
  rng = np.random.default_rng(0)
  latent_data.write_dataset(tmp_path, {
      f's{i}': ('val' if i == 3 else 'train', rng.normal(size=(100, 128)))
      for i in range(6)})
  for song, frame, value in (('s1', 70, np.nan), ('s3', 9, 4e4)):
    shard = np.load(tmp_path / f'song-{song}.npy', mmap_mode='r+')
    shard[frame, 2] = value
    shard.flush()
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.verify', str(tmp_path),
       '--workers', '2'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1, result.stderr
  first, second = result.stdout.splitlines()
  assert first == (f"{tmp_path / 'song-s1.npy'}: song 's1': frame 70, "
                   'channel 2 is nan, not finite')
  assert second.startswith(f"{tmp_path / 'song-s3.npy'}: song 's3': frame 9, "
                           'channel 2 is 40000, ')
  assert '6/6' in result.stderr
  assert result.stderr.splitlines()[-1] == (
      'jingle_jax.verify: error: 2 of 6 songs are bad')
