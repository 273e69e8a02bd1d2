"""Audio files -> mono 24 kHz float32, streamed in blocks of bounded size.

Any file the installed libsndfile reads (wav, flac, ogg/vorbis, opus, mp3,
aiff, ...), any channel count (averaged), any rate from 8 to 192 kHz. The
resampling is torchaudio's band-limited sinc (functional.resample, computed
here in numpy: reading audio needs no torch) applied block by block, with
enough of the neighbouring samples on each side that every output sample is
computed from exactly the input samples (and zero padding at the file's
ends) it would see if the whole file were resampled at once: there are no
seams. The number of 24 kHz samples is
ceil(n x 24000 / rate) for n input samples, computed in integers, and known
only when the stream has been read: nothing computes it beforehand.
"""

import functools
import math
import os
import re

import numpy as np
import soundfile

from jingle_jax.data import latents

SAMPLE_RATES = (8_000, 192_000)  # the accepted range, in Hz
SILENCE_PEAK = 1e-4  # -80 dBFS
BLOCK_SECONDS = 10  # input read and resampled at a time
# Largest resampling filter bank (values): a rate whose ratio to 24 kHz
# reduces to large coprime numbers (e.g. 44,101 Hz) would need gigabytes.
MAX_FILTER_VALUES = 1 << 25
# torchaudio's defaults, given explicitly: the filter's size follows them.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# Suffixes of libsndfile's formats beyond the format name itself.
_MORE_SUFFIXES = {'OGG': ('.oga', '.opus'), 'AIFF': ('.aif', '.aifc'),
                  'AU': ('.snd',), 'WAVEX': ('.wav',), 'IRCAM': ('.sf',),
                  'MAT5': ('.mat',), 'MPC2K': ('.pgm',)}
# Common audio suffixes this libsndfile may not read: reported, not ignored.
_OTHER_AUDIO_SUFFIXES = ('.aac', '.alac', '.ape', '.m4a', '.mka', '.mp2',
                         '.mpc', '.opus', '.spx', '.tta', '.wma', '.wv')


class BadAudio(ValueError):
  """A file to skip; the message is the reason."""


@functools.cache
def readable_suffixes() -> frozenset[str]:
  """Lower-case suffixes of the formats the installed libsndfile reads.

  RAW is left out: headerless files say nothing of their rate or layout.
  """
  suffixes = set()
  for name in soundfile.available_formats():
    if name != 'RAW':
      suffixes.add('.' + name.lower())
      suffixes.update(_MORE_SUFFIXES.get(name, ()))
  return frozenset(suffixes)


def audio_suffixes() -> frozenset[str]:
  """Suffixes taken for audio: the readable ones and other common ones."""
  return readable_suffixes() | frozenset(_OTHER_AUDIO_SUFFIXES)


def _half_width(rate_in: int, rate_out: int) -> int:
  """The filter's half width in input samples, as torchaudio computes it."""
  return math.ceil(LOWPASS_FILTER_WIDTH * rate_in /
                   (min(rate_in, rate_out) * ROLLOFF))


def sinc_kernel(rate_in: int, rate_out: int) -> np.ndarray:
  """torchaudio's sinc_interp_hann filter bank from rate_in to rate_out
  (reduced by their gcd), computed in float32 as its float32 resampling
  computes it: [rate_out, 2 x _half_width + rate_in]."""
  base = min(rate_in, rate_out) * ROLLOFF
  width = _half_width(rate_in, rate_out)
  index = np.arange(-width, width + rate_in, dtype=np.float32) / np.float32(
      rate_in)
  t = (np.arange(0, -rate_out, -1, dtype=np.float32)[:, None] /
       np.float32(rate_out) + index) * np.float32(base)
  t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
  window = np.cos(t * np.float32(math.pi / LOWPASS_FILTER_WIDTH / 2)) ** 2
  t *= np.float32(math.pi)
  with np.errstate(invalid='ignore', divide='ignore'):
    kernel = np.where(t == 0, np.float32(1), np.sin(t) / t)
  return kernel * (window * np.float32(base / rate_in))


class Resampler:
  """Streaming torchaudio sinc resampling of mono float32 to 24 kHz.

  push() the input in blocks of any size and then flush(); each returns the
  output samples that are final so far. The output equals
  torchaudio.functional.resample of the whole input (to float32 rounding:
  the sums run in another order), with ceil(n x 24000 / rate) samples for n
  input samples.
  """

  def __init__(self, rate: int):
    gcd = math.gcd(rate, latents.SAMPLE_RATE)
    self._in, self._out = rate // gcd, latents.SAMPLE_RATE // gcd
    self._width = _half_width(self._in, self._out)
    filter_values = self._out * (2 * self._width + self._in)
    if filter_values > MAX_FILTER_VALUES:
      raise BadAudio(f'sample rate {rate} Hz: resampling it to 24 kHz needs '
                     f'a {filter_values * 4 >> 20} MB filter bank; convert '
                     'the file to a common rate first')
    self._kernel = sinc_kernel(self._in, self._out).T.copy()
    # Whole input periods (self._in samples) of context on each side, at
    # least the filter's half width.
    self._context = -(-self._width // self._in) * self._in
    self._buffer = np.zeros(0, np.float32)  # input from _buffer_start on
    self._buffer_start = 0
    self._done = 0  # input position (whole periods) whose output is out

  def _resample(self, segment_start, segment, keep_from, keep):
    """Outputs keep_from.. keep_from + keep of the segment's resampling:
    torchaudio's strided convolution of the zero-padded segment, one input
    period per row."""
    first = (keep_from - segment_start) // self._in
    rows = -(-keep // self._out)
    padded = np.pad(segment, (self._width, self._width + self._in))
    windows = np.lib.stride_tricks.sliding_window_view(
        padded, len(self._kernel))[::self._in][first:first + rows]
    return (windows @ self._kernel).reshape(-1)[:keep]

  def push(self, samples) -> np.ndarray:
    self._buffer = np.concatenate([self._buffer, samples])
    end = self._buffer_start + len(self._buffer)
    stop = (end - self._context) // self._in * self._in
    if stop <= self._done:
      return np.zeros(0, np.float32)
    segment_start = max(0, self._done - self._context)
    segment = self._buffer[segment_start - self._buffer_start:
                           stop + self._context - self._buffer_start]
    out = self._resample(segment_start, segment, self._done,
                         (stop - self._done) // self._in * self._out)
    self._done = stop
    keep = max(0, self._done - self._context)
    self._buffer = self._buffer[keep - self._buffer_start:]
    self._buffer_start = keep
    return out

  def flush(self) -> np.ndarray:
    """The rest of the output, once the input has ended."""
    end = self._buffer_start + len(self._buffer)
    wanted = -(-(end - self._done) * self._out // self._in)
    segment_start = max(0, self._done - self._context)
    segment = self._buffer[segment_start - self._buffer_start:]
    # Zeros, as the whole input's resampling pads it with, up to whole
    # periods past the filter: torchaudio's own output length (rounded in
    # float32) is then exact and long enough.
    padding = -(len(segment) + self._width) % self._in + (self._width +
                                                          self._in)
    segment = np.concatenate([segment, np.zeros(padding, np.float32)])
    out = self._resample(segment_start, segment, self._done, wanted)
    self._done = end
    self._buffer = np.zeros(0, np.float32)
    return out


# A file whose samples end this much before its header's length is flagged
# as truncated (beyond what compressed formats' length estimates miss).
TRUNCATION_SECONDS = 0.1
# libsndfile's log line of a sound data chunk longer than the file holds.
_CUT_CHUNK = re.compile(r'^(?:data|SSND)\s*:\s*(\d+) \(should be (\d+)\)',
                        re.MULTILINE)


class MonoStream:
  """A file's audio as mono 24 kHz float32 blocks (iterate once).

  Opening checks what the header tells (readable, rate, channels); reading
  checks the samples (finite) and, at the end, that they are not silent.
  `samples` counts the 24 kHz samples given so far. Reads from `start`
  seconds on, at most `seconds` of audio when given.
  """

  def __init__(self, path, *, start: float = 0.0, seconds=None):
    self.path = os.fspath(path)
    if os.path.getsize(self.path) == 0:
      raise BadAudio('empty file (0 bytes)')
    suffix = os.path.splitext(self.path)[1].lower()
    if suffix not in readable_suffixes():
      raise BadAudio(f'{suffix} files cannot be read by the installed '
                     f'libsndfile {soundfile.__libsndfile_version__}; '
                     'convert it (e.g. to flac)')
    try:
      self._file = soundfile.SoundFile(self.path)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
      raise BadAudio(f'unreadable: {e}') from None
    self.rate, self.channels = self._file.samplerate, self._file.channels
    if not SAMPLE_RATES[0] <= self.rate <= SAMPLE_RATES[1]:
      self.close()
      raise BadAudio(f'sample rate {self.rate} Hz outside '
                     f'{SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz')
    try:
      self._resampler = (None if self.rate == latents.SAMPLE_RATE else
                         Resampler(self.rate))
      if start:
        self._file.seek(round(start * self.rate))
    except (BadAudio, RuntimeError) as e:  # soundfile's errors included
      self.close()
      raise BadAudio(str(e) if isinstance(e, BadAudio) else
                     f'cannot start at {start:g} s: {e}') from None
    self._limit = None if seconds is None else round(
        seconds * latents.SAMPLE_RATE)
    self.samples = 0
    self.peak = 0.0
    self._frames_read = 0  # at the file's rate
    # When the decoder stops short of the header's length (a cut file):
    # the seconds the header promised.
    self.header_seconds = None

  def close(self):
    self._file.close()

  def __iter__(self):
    try:
      for block in self._file.blocks(BLOCK_SECONDS * self.rate,
                                     dtype='float32', always_2d=True):
        if not np.all(np.isfinite(block)):
          raise BadAudio('non-finite samples')
        self._frames_read += len(block)
        mono = block.mean(axis=1)
        yield from self._give(mono if self._resampler is None else
                              self._resampler.push(mono))
        if self._limit is not None and self.samples >= self._limit:
          break
      else:
        if self._resampler is not None:
          yield from self._give(self._resampler.flush())
        self.header_seconds = self._header_seconds()
    finally:
      self.close()
    if self.peak <= SILENCE_PEAK:
      raise BadAudio(f'silent (peak at or below {SILENCE_PEAK})')

  def _header_seconds(self) -> float | None:
    """The length the header gives, when the audio ends TRUNCATION_SECONDS
    or more before it: libsndfile's count of frames where its decoder
    stopped early, else its log's data chunk size ('data : 529200 (should
    be 264600)' for a cut wav, whose frames it counts from the file)."""
    read = self._frames_read / self.rate
    header = self._file.frames / self.rate
    chunk = _CUT_CHUNK.search(self._file.extra_info)
    if chunk is not None and int(chunk[2]):
      header = max(header, read * int(chunk[1]) / int(chunk[2]))
    return header if header - read >= TRUNCATION_SECONDS else None

  def _give(self, samples):
    if self._limit is not None:
      samples = samples[:self._limit - self.samples]
    if len(samples):
      self.samples += len(samples)
      self.peak = max(self.peak, float(np.max(np.abs(samples))))
      yield samples
