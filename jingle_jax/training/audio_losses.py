"""The original's audio-domain terms (DESIGN.md 4.5, 4.5a) as pure JAX functions.

Audio is [B, samples] float32 at 24 kHz. Spectra follow torch.stft's
defaults as the original called it: a periodic Hann window as long as
n_fft, centred frames (n_fft // 2 samples of reflect padding on each side),
one-sided, unnormalised. The mel spectrogram is torchaudio's MelSpectrogram
(power 2, HTK scale, no filter normalisation).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.data import latents
from jingle_jax.training import losses

# (n_fft, hop) of the multi-resolution STFT loss; windows are n_fft long.
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
MEL_N_FFT, MEL_HOP, MEL_BANDS, MEL_F_MAX = 1024, 256, 80, 8000.0
LOG_FLOOR = 1e-5  # added before every log
ENVELOPE_SEGMENTS = 250
# The spectral-outlier penalty: its STFT and frequency bands (Hz).
OUTLIER_N_FFT, OUTLIER_HOP = 2048, 512
OUTLIER_BANDS = ((1800.0, 2200.0), (3800.0, 4200.0), (5800.0, 6200.0))
OUTLIER_QUANTILE = 0.9


def _hann(length: int) -> np.ndarray:
  """torch.hann_window(length) (periodic)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)
          ).astype(np.float32)


def power_spectrum(audio, n_fft: int, hop: int):
  """|STFT|^2 [B, frames, n_fft // 2 + 1], frames = 1 + samples // hop."""
  padded = jnp.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)), mode='reflect')
  frames = 1 + audio.shape[1] // hop
  index = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None]
  spectrum = jnp.fft.rfft(padded[:, index] * _hann(n_fft), axis=-1)
  return jnp.square(spectrum.real) + jnp.square(spectrum.imag)


def magnitude(audio, n_fft: int, hop: int):
  """|STFT| with a zero (not NaN) gradient where the spectrum is 0."""
  power = power_spectrum(audio, n_fft, hop)
  positive = power > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, power, 1.0)), 0.0)


def _log_distance(a, b):
  return jnp.mean(jnp.abs(jnp.log(a + LOG_FLOOR) - jnp.log(b + LOG_FLOOR)))


def stft_distance(output, reference):
  """Mean over STFT_RESOLUTIONS of spectral convergence (Frobenius norms
  over the whole batch) plus the mean log-magnitude distance."""
  total = 0.0
  for n_fft, hop in STFT_RESOLUTIONS:
    out, ref = magnitude(output, n_fft, hop), magnitude(reference, n_fft, hop)
    total += (jnp.linalg.norm(out - ref) / (jnp.linalg.norm(ref) + 1e-6)
              + _log_distance(out, ref))
  return total / len(STFT_RESOLUTIONS)


@functools.cache
def mel_filterbank() -> np.ndarray:
  """torchaudio.functional.melscale_fbanks(513, 0, 8000, 80, 24000) (HTK,
  no norm): triangular filters [frequencies, mels]."""
  def mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)

  frequencies = np.linspace(0, latents.SAMPLE_RATE // 2, MEL_N_FFT // 2 + 1)
  points = np.linspace(mel(0.0), mel(MEL_F_MAX), MEL_BANDS + 2)
  points = 700.0 * (10.0 ** (points / 2595.0) - 1.0)
  widths = np.diff(points)
  slopes = points[None, :] - frequencies[:, None]
  down = -slopes[:, :-2] / widths[:-1]
  up = slopes[:, 2:] / widths[1:]
  return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def mel_spectrogram(audio):
  """torchaudio's MelSpectrogram(24000, n_fft 1024, hop 256, 80 mels,
  f_max 8000) as [B, frames, 80]."""
  return power_spectrum(audio, MEL_N_FFT, MEL_HOP) @ mel_filterbank()


def mel_distance(output, reference):
  """Mean |log(mel_o + 1e-5) - log(mel_r + 1e-5)|."""
  return _log_distance(mel_spectrogram(output), mel_spectrogram(reference))


def envelope(audio):
  """max |x| over each of 250 equal segments (the tail dropped): [B, 250]."""
  length = audio.shape[1] // ENVELOPE_SEGMENTS
  segments = audio[:, :ENVELOPE_SEGMENTS * length].reshape(
      audio.shape[0], ENVELOPE_SEGMENTS, length)
  return jnp.max(jnp.abs(segments), axis=-1)


def pearson(x, y):
  """Per-example correlation of [B, N] rows (unbiased, 1e-8 in the
  denominator, clipped to [-1, 1])."""
  x = x - jnp.mean(x, axis=1, keepdims=True)
  y = y - jnp.mean(y, axis=1, keepdims=True)
  count = x.shape[1] - 1
  covariance = jnp.sum(x * y, axis=1) / count
  scale = jnp.sqrt(jnp.sum(x * x, axis=1) / count * jnp.sum(y * y, axis=1)
                   / count)
  return jnp.clip(covariance / (scale + 1e-8), -1.0, 1.0)


def correlation_cost(output, inputs, targets):
  """Mean over the batch of corr(output, input)^2 + corr(output, target)^2
  of the envelopes."""
  out = envelope(output)
  return jnp.mean(jnp.square(pearson(out, envelope(inputs)))
                  + jnp.square(pearson(out, envelope(targets))))


def spectral_outlier(output):
  """The published code's penalty on the output's 2, 4 and 6 kHz bands.

  Per band: the band's mean magnitude per frame [B, frames], z-scored over
  the batch's frames; the frames whose z-score is above the batch's 90th
  percentile add (energy - batch mean)^2, averaged over those frames; the
  result is the mean over the three bands. Which frames count is not
  differentiated (a selection).
  """
  spectrum = magnitude(output, OUTLIER_N_FFT, OUTLIER_HOP)
  frequencies = np.fft.rfftfreq(OUTLIER_N_FFT, 1.0 / latents.SAMPLE_RATE)
  total = 0.0
  for low, high in OUTLIER_BANDS:
    bins = np.flatnonzero((frequencies >= low) & (frequencies <= high))
    energy = jnp.mean(spectrum[..., bins], axis=-1)
    mean = jnp.mean(energy)
    z = (energy - mean) / (jnp.std(energy, ddof=1) + 1e-8)
    selected = z > jnp.quantile(jax.lax.stop_gradient(z), OUTLIER_QUANTILE)
    total += (jnp.sum(jnp.where(selected, jnp.square(energy - mean), 0.0))
              / jnp.maximum(jnp.sum(selected), 1))
  return total / len(OUTLIER_BANDS)


# Terms that are not reconstruction terms: left out of the validation loss.
REGULARISERS = ('spectral_outlier',)
# The terms that compare with the input's audio, and with the target's.
INPUT_TERMS = ('audio_input', 'stft', 'mel', 'correlation')
TARGET_TERMS = ('audio_target', 'stft', 'mel', 'correlation')


def weighted(loss_config, terms) -> bool:
  """Whether any of `terms` has a weight (LossConfig.audio_weights)."""
  return any(loss_config.audio_weights[name] for name in terms)


def weighted_terms(output, inputs, targets, loss_config, validation=False):
  """(sum of the weighted terms, {term: value}) of the terms with a weight.

  output, inputs, targets: audio [B, samples] (inputs and targets held
  constant; None where no weighted term needs them, see INPUT_TERMS and
  TARGET_TERMS); with `validation`, REGULARISERS are reported but not
  summed.
  """
  terms = {
      'audio_input': lambda: losses.rms(output - inputs),
      'audio_target': lambda: losses.rms(output - targets),
      'stft': lambda: 0.5 * (stft_distance(output, inputs)
                             + stft_distance(output, targets)),
      'mel': lambda: 0.5 * (mel_distance(output, inputs)
                            + mel_distance(output, targets)),
      'correlation': lambda: correlation_cost(output, inputs, targets),
      'spectral_outlier': lambda: spectral_outlier(output),
  }
  total, metrics = 0.0, {}
  for name, weight in loss_config.audio_weights.items():
    if weight:
      metrics[name] = terms[name]()
      if not (validation and name in REGULARISERS):
        total += weight * metrics[name]
  return total, metrics
