"""Demo songs: deterministic, distinct, multi-instrument, written as wav."""

import os
import subprocess
import sys

import numpy as np
import soundfile

from jingle_jax import synth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 24_000


def band_energy(samples, low, high):
  spectrum = np.abs(np.fft.rfft(samples)) ** 2
  hz = np.fft.rfftfreq(len(samples), 1 / RATE)
  return spectrum[(hz >= low) & (hz < high)].sum() / spectrum.sum()


def test_songs_are_deterministic_and_distinct():
  song = synth.render_song(0, 1, 3.0, RATE)
  np.testing.assert_array_equal(song, synth.render_song(0, 1, 3.0, RATE))
  assert song.dtype == np.float32 and song.shape == (3 * RATE,)
  np.testing.assert_allclose(np.abs(song).max(), synth.PEAK, rtol=1e-6)
  assert not np.allclose(song, synth.render_song(0, 2, 3.0, RATE))
  assert not np.allclose(song, synth.render_song(1, 1, 3.0, RATE))
  styles = [synth.draw_style(np.random.default_rng([0, i])) for i in range(8)]
  assert len({style.tempo for style in styles}) == 8
  assert len({(style.root, style.scale) for style in styles}) >= 4
  assert len({tuple(style.lead) for style in styles}) == 8


def test_songs_hold_bass_and_cymbals():
  song = synth.render_song(0, 0, 4.0, RATE)
  assert band_energy(song, 30, 250) > 0.05  # bass and kick
  assert band_energy(song, 250, 4000) > 0.05  # chords and melody
  assert band_energy(song, 6000, 12000) > 1e-4  # hi-hats and snare


def test_cli_writes_identical_wavs(tmp_path):
  command = [sys.executable, '-m', 'jingle_jax.synth', '--num-songs', '2',
             '--seconds', '2.5', '--seed', '3', '--sample-rate', '44100']
  for out in ('a', 'b'):
    subprocess.run(command + ['--out-dir', str(tmp_path / out)], cwd=REPO,
                   check=True, capture_output=True)
  names = sorted(os.listdir(tmp_path / 'a'))
  assert names == ['song_000.wav', 'song_001.wav']
  for name in names:
    first = (tmp_path / 'a' / name).read_bytes()
    assert first == (tmp_path / 'b' / name).read_bytes()
    info = soundfile.info(tmp_path / 'a' / name)
    assert (info.samplerate, info.channels, info.frames) == (44100, 1, 110250)
  bad = subprocess.run(command + ['--seconds', '0', '--out-dir',
                                  str(tmp_path / 'c')], cwd=REPO,
                       capture_output=True, text=True)
  assert bad.returncode != 0 and '--seconds must be positive' in bad.stderr
