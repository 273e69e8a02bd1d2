"""The original's audio-domain terms (DESIGN.md 4.5, 4.5a) in PyTorch, written as
the original computed them: torch.stft and torchaudio's MelSpectrogram.
Audio is [B, samples] float32 at 24 kHz."""

import torch
import torchaudio

RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
BANDS = ((1800, 2200), (3800, 4200), (5800, 6200))


def magnitude(audio, n_fft, hop, window):
  return torch.stft(audio, n_fft, hop, window, torch.hann_window(window),
                    return_complex=True).abs()


def stft_distance(output, reference):
  total = 0.0
  for n_fft, hop, window in RESOLUTIONS:
    out = magnitude(output, n_fft, hop, window)
    ref = magnitude(reference, n_fft, hop, window)
    total += (torch.norm(out - ref, p='fro') / (torch.norm(ref, p='fro')
                                                + 1e-6)
              + torch.mean(torch.abs(torch.log(out + 1e-5)
                                     - torch.log(ref + 1e-5))))
  return total / len(RESOLUTIONS)


def mel_distance(output, reference):
  mel = torchaudio.transforms.MelSpectrogram(
      sample_rate=24000, n_fft=1024, hop_length=256, n_mels=80, f_min=0.0,
      f_max=8000.0)
  return torch.mean(torch.abs(torch.log(mel(output) + 1e-5)
                              - torch.log(mel(reference) + 1e-5)))


def envelope(audio):
  length = audio.shape[1] // 250
  return audio[:, :250 * length].reshape(-1, 250, length).abs().amax(-1)


def pearson(x, y):
  x = x - x.mean(1, keepdim=True)
  y = y - y.mean(1, keepdim=True)
  covariance = (x * y).sum(1) / (x.shape[1] - 1)
  return torch.clamp(covariance / (x.std(1) * y.std(1) + 1e-8), -1, 1)


def correlation_cost(output, inputs, targets):
  out = envelope(output)
  return torch.mean(pearson(out, envelope(inputs)) ** 2
                    + pearson(out, envelope(targets)) ** 2)


def spectral_outlier(output):
  spectrum = magnitude(output, 2048, 512, 2048)  # [B, bins, frames]
  frequencies = torch.fft.rfftfreq(2048, 1 / 24000)
  total = 0.0
  for low, high in BANDS:
    band = (frequencies >= low) & (frequencies <= high)
    energy = spectrum[:, band].mean(1)  # [B, frames]
    z = (energy - energy.mean()) / (energy.std() + 1e-8)
    selected = z > torch.quantile(z.detach(), 0.9)
    total += ((energy[selected] - energy.mean()) ** 2).mean()
  return total / len(BANDS)


def weighted_terms(decode, output, inputs, targets, weights):
  """The weighted sum of the terms `weights` (a LossConfig) weights, on the
  audio decode() gives of latents: the output's with gradient, the input's
  and target's without, each decoded only when a weighted term needs it."""
  out = decode(output)
  with torch.no_grad():
    held = {name: decode(latents) for name, latents, terms in (
        ('input', inputs, ('audio_input', 'stft', 'mel', 'correlation')),
        ('target', targets, ('audio_target', 'stft', 'mel', 'correlation')))
            if any(getattr(weights, term + '_weight') for term in terms)}
  rms = lambda error: error.square().mean().sqrt()
  terms = {
      'audio_input': lambda: rms(out - held['input']),
      'audio_target': lambda: rms(out - held['target']),
      'stft': lambda: 0.5 * (stft_distance(out, held['input'])
                             + stft_distance(out, held['target'])),
      'mel': lambda: 0.5 * (mel_distance(out, held['input'])
                            + mel_distance(out, held['target'])),
      'correlation': lambda: correlation_cost(out, held['input'],
                                              held['target']),
      'spectral_outlier': lambda: spectral_outlier(out),
  }
  weight = lambda name: getattr(weights, name + '_weight')
  return sum(weight(name) * term() for name, term in terms.items()
             if weight(name))
