"""Each fixed masking baseline matches its DESIGN.md 4.6 definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jingle_jax.models import baselines

B, T, D = 2, 600, 128


@pytest.fixture
def latents():
  input_rng, target_rng = jax.random.split(jax.random.key(0))
  return (jax.random.normal(input_rng, (B, T, D)),
          jax.random.normal(target_rng, (B, T, D)))


def test_temporal_alternates_150_frame_segments_with_linear_fades(latents):
  input_mask, target_mask = map(np.asarray,
                                baselines.temporal_masks(*latents))
  assert input_mask.shape == (B, T, D)
  np.testing.assert_allclose(input_mask + target_mask, 1.0, atol=1e-6)
  assert np.all(input_mask == input_mask[:1, :, :1])  # same for all b, d
  profile = input_mask[0, :, 0]
  half = baselines.FADE_FRAMES // 2
  for segment in range(T // 150):
    start, stop = segment * 150, (segment + 1) * 150
    core = profile[start + half + 1:stop - half]
    np.testing.assert_array_equal(core, 1.0 if segment % 2 == 0 else 0.0)
  # Clip edges are not faded; each boundary is a linear ramp.
  assert profile[0] == 1.0 and profile[-1] == 0.0
  ramp = profile[150 - half - 1:150 + half + 1]
  np.testing.assert_allclose(np.diff(ramp), -1.0 / baselines.FADE_FRAMES,
                             atol=1e-6)
  assert ramp[0] == 1.0 and ramp[-1] == 0.0


def test_frequency_keeps_low_30_percent_for_input(latents):
  input_mask, target_mask = map(np.asarray,
                                baselines.frequency_masks(*latents))
  low = int(0.3 * D)
  assert low == 38
  np.testing.assert_allclose(input_mask[..., :low], 1.0)
  np.testing.assert_allclose(input_mask[..., low:], 0.2)
  np.testing.assert_allclose(target_mask[..., :low], 0.2)
  np.testing.assert_allclose(target_mask[..., low:], 1.0)


def test_spectral_splits_channels_in_random_halves(latents):
  first = baselines.spectral_masks(*latents, jax.random.key(1))
  again = baselines.spectral_masks(*latents, jax.random.key(1))
  other = baselines.spectral_masks(*latents, jax.random.key(2))
  input_mask, target_mask = map(np.asarray, first)
  channels = input_mask[0, 0]
  assert set(np.unique(channels)) == {0.0, 1.0}
  assert channels.sum() == D // 2
  np.testing.assert_array_equal(input_mask, np.broadcast_to(channels,
                                                            input_mask.shape))
  np.testing.assert_array_equal(input_mask + target_mask, 1.0)
  np.testing.assert_array_equal(first[0], again[0])
  assert not np.array_equal(first[0], other[0])


def test_energy_splits_at_each_clips_own_70th_percentile(latents):
  inputs, targets = latents
  input_mask, target_mask = map(np.asarray,
                                baselines.energy_masks(inputs, targets))
  for latent, mask, loud in ((inputs, input_mask, True),
                             (targets, target_mask, False)):
    energy = np.sum(np.square(np.asarray(latent)), axis=-1)
    threshold = np.percentile(energy, 70, axis=1, keepdims=True)
    expected = energy > threshold if loud else energy <= threshold
    np.testing.assert_array_equal(mask, np.broadcast_to(
        expected[..., None], mask.shape).astype(np.float32))
  assert input_mask[:, :, 0].mean() == pytest.approx(0.3, abs=0.01)
  assert target_mask[:, :, 0].mean() == pytest.approx(0.7, abs=0.01)


def test_hybrid_is_temporal_times_frequency_at_0_3(latents):
  input_mask, target_mask = baselines.hybrid_masks(*latents)
  temporal_in, temporal_tgt = baselines.temporal_masks(*latents)
  frequency_in, frequency_tgt = baselines.frequency_masks(*latents,
                                                          attenuation=0.3)
  np.testing.assert_allclose(input_mask, temporal_in * frequency_in)
  np.testing.assert_allclose(target_mask, temporal_tgt * frequency_tgt)
  assert float(frequency_in.min()) == pytest.approx(0.3)


def test_every_baseline_gives_float32_masks_in_the_unit_range(latents):
  for name, masks_of in baselines.BASELINES.items():
    masks = masks_of(*latents, jax.random.key(0))
    for mask in masks:
      assert mask.shape == latents[0].shape and mask.dtype == jnp.float32
      assert 0 <= float(mask.min()) and float(mask.max()) <= 1, name
    # Only the spectral split draws: the others ignore the key.
    again = masks_of(*latents, jax.random.key(1))
    assert np.array_equal(masks[0], again[0]) == (name != 'spectral'), name
