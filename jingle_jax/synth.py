"""Procedural demo songs: drums, bass, chords and a melody.

  python -m jingle_jax.synth --out-dir DIR [--num-songs 8] [--seconds 48] \
      [--seed 0] [--sample-rate 24000]

Writes DIR/song_NNN.wav, mono 16-bit PCM. Song i is a pure function of
(seed, i, seconds, sample rate): its tempo, key, mode, chord progression,
instrument timbres, drum pattern and melody are drawn from a numpy Generator
seeded with (seed, i). 48 s holds three 16 s clips: two pairs of
consecutive clips per song.
"""

import dataclasses
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np
import soundfile

from jingle_jax import cli
from jingle_jax.core import files
from jingle_jax.data import latents

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord roots as scale degrees, one chord per bar: I-V-vi-IV and friends.
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4),
                (0, 3, 0, 4))
PEAK = 0.8  # of the mix, leaving headroom below full scale


@dataclasses.dataclass(frozen=True)
class Style:
  """What makes one song differ from another."""
  tempo: float  # beats per minute
  root: int  # MIDI note of the key's tonic, in the bass octave
  scale: tuple[int, ...]
  progression: tuple[int, ...]
  bass: np.ndarray  # harmonic amplitudes of each instrument
  chords: np.ndarray
  lead: np.ndarray
  kicks: np.ndarray  # [8] eighth notes of a bar that have a kick
  rest_probability: float  # of the melody's eighth notes


def timbre(rng, harmonics: int, brightness: float) -> np.ndarray:
  """Harmonic amplitudes falling as k^-brightness, each jittered."""
  k = np.arange(1, harmonics + 1)
  return k ** -brightness * rng.uniform(0.5, 1.0, harmonics)


def draw_style(rng) -> Style:
  kicks = np.zeros(8, bool)
  kicks[[0, 4]] = True
  kicks[rng.choice([3, 5, 6, 7])] = rng.random() < 0.7
  return Style(
      tempo=rng.uniform(84, 140),
      root=int(rng.integers(33, 45)),
      scale=MAJOR if rng.random() < 0.5 else MINOR,
      progression=PROGRESSIONS[rng.integers(len(PROGRESSIONS))],
      bass=timbre(rng, rng.integers(3, 7), rng.uniform(1.0, 2.0)),
      chords=timbre(rng, rng.integers(4, 10), rng.uniform(1.2, 2.5)),
      lead=timbre(rng, rng.integers(3, 9), rng.uniform(0.6, 1.6)),
      kicks=kicks,
      rest_probability=rng.uniform(0.1, 0.4))


def midi_hz(note) -> float:
  return 440.0 * 2.0 ** ((note - 69) / 12)


def tone(note, seconds, rate, harmonics, attack=0.01, decay=0.5):
  """An additive-synthesis note with an attack ramp and exponential decay;
  harmonics above the Nyquist frequency are left out."""
  t = np.arange(int(seconds * rate)) / rate
  wave = np.zeros_like(t)
  for k, amplitude in enumerate(harmonics, 1):
    if k * midi_hz(note) < rate / 2:
      wave += amplitude * np.sin(2 * np.pi * k * midi_hz(note) * t)
  return wave * np.minimum(t / attack, 1.0) * np.exp(-t / decay)


def drums(rate, rng):
  """(kick, snare, hi-hat) one-shot sounds."""
  t = np.arange(int(0.3 * rate)) / rate
  sweep = 2 * np.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / rate
  kick = np.sin(sweep) * np.exp(-t / 0.12)
  noise = rng.standard_normal(len(t))
  snare = (0.6 * noise + np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.07)
  hihat = np.diff(noise, prepend=0.0) * np.exp(-t / 0.015)
  return kick, 0.5 * snare, 0.15 * hihat


def place(track, start_s: float, sound, rate) -> None:
  """Adds `sound` to `track` from `start_s` on, cut at the track's end."""
  start = int(round(start_s * rate))
  end = min(len(track), start + len(sound))
  if start < end:
    track[start:end] += sound[:end - start]


def render_song(seed: int, index: int, seconds: float,
                rate: int) -> np.ndarray:
  """Song `index` of `seed`: float32 mono [round(seconds * rate)]."""
  rng = np.random.default_rng([seed, index])
  style = draw_style(rng)
  kick, snare, hihat = drums(rate, rng)
  track = np.zeros(round(seconds * rate))
  eighth = 30.0 / style.tempo
  degree = 7  # the melody's scale degree, a random walk from the octave

  def pitch(scale_degree, octave_shift=0):
    octave, step = divmod(scale_degree, len(style.scale))
    return style.root + 12 * (octave + octave_shift) + style.scale[step]

  for bar in range(int(seconds / (8 * eighth)) + 1):
    start = bar * 8 * eighth
    chord = style.progression[bar % len(style.progression)]
    for offset in (0, 2, 4):
      place(track, start, 0.12 * tone(pitch(chord + offset, 2), 8 * eighth,
                                      rate, style.chords, 0.05, 1.5), rate)
    for step in range(8):
      at = start + step * eighth
      if style.kicks[step]:
        place(track, at, kick, rate)
      if step in (2, 6):
        place(track, at, snare, rate)
      place(track, at, hihat, rate)
      if step % 2 == 0:
        place(track, at, 0.4 * tone(pitch(chord), 2 * eighth, rate,
                                    style.bass, 0.005, 0.3), rate)
      degree = int(np.clip(degree + rng.integers(-2, 3), 3, 13))
      if rng.random() >= style.rest_probability:
        place(track, at, 0.25 * tone(pitch(degree, 2), eighth, rate,
                                     style.lead, 0.01, 0.2), rate)
  return (track * PEAK / np.max(np.abs(track))).astype(np.float32)


def write_songs(out_dir, *, num_songs: int, seconds: float, seed: int,
                rate: int) -> list[str]:
  """Writes the songs atomically; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for index in range(num_songs):
    path = os.path.join(out_dir, f'song_{index:03d}.wav')
    with files.atomic_write(path) as f:
      soundfile.write(f, render_song(seed, index, seconds, rate), rate,
                      subtype='PCM_16', format='WAV')
    paths.append(path)
  return paths


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('out-dir', None, 'Folder for the wav files.')
  flags.DEFINE_integer('num-songs', 8, 'Songs to write.')
  flags.DEFINE_float('seconds', 48.0, 'Length of each song.')
  flags.DEFINE_integer('seed', 0, 'Seed of the songs.')
  flags.DEFINE_integer('sample-rate', latents.SAMPLE_RATE, 'Hz.')


def run(flag_values):
  if flag_values['num-songs'].value < 1:
    raise app.UsageError('--num-songs must be at least 1')
  if flag_values.seconds <= 0:
    raise app.UsageError('--seconds must be positive')
  if flag_values['sample-rate'].value < 8000:
    raise app.UsageError('--sample-rate must be at least 8000 Hz')
  paths = write_songs(flag_values['out-dir'].value,
                      num_songs=flag_values['num-songs'].value,
                      seconds=flag_values.seconds, seed=flag_values.seed,
                      rate=flag_values['sample-rate'].value)
  logging.info('%d songs of %g s: %s', len(paths), flag_values.seconds,
               flag_values['out-dir'].value)


if __name__ == '__main__':
  cli.run('jingle_jax.synth', run, define_flags, required=['out-dir'],
          logs_info=True)
