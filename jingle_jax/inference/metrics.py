"""What a pair's output keeps of its input and target: mask statistics,
errors and rhythm transfer, per pair.

Rhythm transfer compares loudness envelopes: per frame the RMS over
channels, smoothed by a moving average of ENVELOPE_FRAMES; the Pearson
correlation of the output's envelope with the input's and with the
target's; a pair's rhythm counts as preserved when the input correlation is
above RHYTHM_THRESHOLD.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.training import losses

ENVELOPE_FRAMES = 5  # 67 ms at 75 frames/s: smooths jitter, keeps 8 onsets/s
RHYTHM_THRESHOLD = 0.3


def envelope(clip):
  """[..., T, D] -> [..., T]: per-frame RMS over channels, smoothed.

  The moving average pads with the edge values, so the clip's ends are not
  pulled towards zero.
  """
  frame_rms = jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(clip, jnp.float32)),
                               -1))
  half = ENVELOPE_FRAMES // 2
  pad = [(0, 0)] * (frame_rms.ndim - 1) + [(half, half)]
  padded = jnp.pad(frame_rms, pad, mode='edge')
  frames = frame_rms.shape[-1]
  return sum(padded[..., i:i + frames]
             for i in range(ENVELOPE_FRAMES)) / ENVELOPE_FRAMES


def pearson(a, b):
  """Correlation of two [T] series; 0 when either is constant."""
  a, b = a - jnp.mean(a), b - jnp.mean(b)
  norm = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
  return jnp.where(norm > 0, jnp.sum(a * b) / jnp.maximum(norm, 1e-30), 0.0)


def pair_metrics(output, inputs, targets, input_mask, target_mask):
  """Metrics of one pair; every argument is [T, D]."""
  masks = losses.mask_metrics(input_mask[None], target_mask[None])
  output_envelope = envelope(output)
  rhythm_input = pearson(output_envelope, envelope(inputs))
  metrics = {name: masks[name] for name in (
      'complementarity', 'overlap', 'coverage', 'input_mask_mean',
      'target_mask_mean')}
  metrics.update(
      rms_error_input=losses.rms(output - inputs),
      rms_error_target=losses.rms(output - targets),
      rhythm_corr_input=rhythm_input,
      rhythm_corr_target=pearson(output_envelope, envelope(targets)),
      rhythm_preserved=(rhythm_input > RHYTHM_THRESHOLD).astype(jnp.float32))
  return metrics


batch_metrics = jax.vmap(pair_metrics)  # [B, T, D] arguments -> {name: [B]}


def mean_over_pairs(per_pair: dict) -> dict[str, float]:
  """{name: [N] per-pair values} -> {name: mean}."""
  return {name: float(np.mean(values)) for name, values in per_pair.items()}
