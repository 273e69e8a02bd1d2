"""The five fixed masking baselines of DESIGN.md 4.6.

Each is a pure function (inputs, targets, key) -> (input_mask, target_mask)
on latents [B, T, D], returning float32 masks of the latents' shape. Only
`spectral` uses the key.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

SEGMENT_FRAMES = 150  # 2 s at 75 frames per second
FADE_FRAMES = 11  # crossfade length at each segment boundary (odd: centred)
LOW_FRACTION = 0.3  # share of channels counted as "low"
FREQUENCY_ATTENUATION = 0.2
HYBRID_ATTENUATION = 0.3
ENERGY_PERCENTILE = 70.0


@functools.lru_cache(maxsize=None)
def temporal_profile(num_frames: int) -> np.ndarray:
  """The input's share of each frame: 1 on even segments, 0 on odd ones.

  A moving average of FADE_FRAMES turns each segment boundary into a linear
  crossfade; edge padding keeps the clip's own start and end unfaded.
  """
  segment = np.arange(num_frames) // SEGMENT_FRAMES
  owner = (segment % 2 == 0).astype(np.float64)
  half = FADE_FRAMES // 2
  padded = np.pad(owner, half, mode='edge')
  kernel = np.full(FADE_FRAMES, 1.0 / FADE_FRAMES)
  return np.convolve(padded, kernel, mode='valid').astype(np.float32)


def low_channels(num_channels: int) -> np.ndarray:
  """True on the first 30% of the channels."""
  return np.arange(num_channels) < int(LOW_FRACTION * num_channels)


def _full(mask, like):
  return jnp.broadcast_to(jnp.asarray(mask, jnp.float32), like.shape)


def temporal_masks(inputs, targets, key=None):
  """Alternating 150-frame segments: input keeps even ones, target odd ones."""
  del targets, key
  profile = temporal_profile(inputs.shape[1])[None, :, None]
  return _full(profile, inputs), _full(1.0 - profile, inputs)


def frequency_masks(inputs, targets, key=None,
                    attenuation=FREQUENCY_ATTENUATION):
  """Input keeps the low 30% of channels, target the rest; others attenuated."""
  del targets, key
  low = low_channels(inputs.shape[-1])
  return (_full(np.where(low, 1.0, attenuation), inputs),
          _full(np.where(low, attenuation, 1.0), inputs))


def spectral_masks(inputs, targets, key):
  """A random half of the channels goes to the input, the rest to the target."""
  del targets
  num_channels = inputs.shape[-1]
  chosen = jax.random.permutation(key, num_channels)[:num_channels // 2]
  to_input = jnp.zeros(num_channels).at[chosen].set(1.0)
  return _full(to_input, inputs), _full(1.0 - to_input, inputs)


def _frame_energy(x):
  return jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1)  # [B, T]


def energy_masks(inputs, targets, key=None):
  """Input keeps its loud frames, target its quiet ones.

  Frame energy is the sum over channels of x^2; loud means above the clip's
  own 70th percentile, quiet at or below it.
  """
  del key
  input_energy, target_energy = _frame_energy(inputs), _frame_energy(targets)
  input_threshold = jnp.percentile(input_energy, ENERGY_PERCENTILE, axis=1,
                                   keepdims=True)
  target_threshold = jnp.percentile(target_energy, ENERGY_PERCENTILE, axis=1,
                                    keepdims=True)
  input_mask = (input_energy > input_threshold)[..., None]
  target_mask = (target_energy <= target_threshold)[..., None]
  return _full(input_mask, inputs), _full(target_mask, targets)


def hybrid_masks(inputs, targets, key=None):
  """Temporal times frequency masks, with attenuation 0.3."""
  del key
  temporal_in, temporal_tgt = temporal_masks(inputs, targets)
  frequency_in, frequency_tgt = frequency_masks(
      inputs, targets, attenuation=HYBRID_ATTENUATION)
  return temporal_in * frequency_in, temporal_tgt * frequency_tgt


BASELINES = {
    'temporal': temporal_masks,
    'frequency': frequency_masks,
    'spectral': spectral_masks,
    'energy': energy_masks,
    'hybrid': hybrid_masks,
}
