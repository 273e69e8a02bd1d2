"""Per-pair metrics: envelopes, correlation, rhythm transfer."""

import numpy as np

from jingle_jax.inference import metrics

T, D = 90, 8


def pulses(period, phase, seed):
  """[T, D] noise whose loudness pulses every `period` frames."""
  loud = (np.arange(T) - phase) % period < period // 2
  noise = np.random.default_rng(seed).normal(size=(T, D))
  return (noise * np.where(loud, 1.0, 0.1)[:, None]).astype(np.float32)


def test_envelope_is_the_smoothed_rms_over_channels():
  clip = np.zeros((T, D), np.float32)
  clip[40] = 5.0  # one loud frame: RMS 5 there, 0 elsewhere
  clip[:, 0] += 2.0 * np.sqrt(D)  # a constant floor: RMS 2 when alone
  expected_frame_rms = np.sqrt(np.mean(clip ** 2, axis=1))
  envelope = np.asarray(metrics.envelope(clip))
  assert envelope.shape == (T,)
  half = metrics.ENVELOPE_FRAMES // 2
  spread = slice(40 - half, 40 + half + 1)
  np.testing.assert_allclose(envelope[spread],
                             np.mean(expected_frame_rms[spread]), rtol=1e-6)
  np.testing.assert_allclose(envelope[:40 - half], 2.0, rtol=1e-6)
  np.testing.assert_allclose(envelope[40 + half + 1:], 2.0, rtol=1e-6)
  batched = np.asarray(metrics.envelope(np.stack([clip, 2 * clip])))
  np.testing.assert_allclose(batched, [envelope, 2 * envelope], rtol=1e-6)


def test_pearson_matches_numpy_and_is_zero_for_a_constant():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, T))
  np.testing.assert_allclose(metrics.pearson(a, b), np.corrcoef(a, b)[0, 1],
                             rtol=1e-5)
  np.testing.assert_allclose(metrics.pearson(a, 3 * a + 1), 1.0, rtol=1e-6)
  assert float(metrics.pearson(a, np.ones(T))) == 0.0


def test_pair_metrics_follow_whose_rhythm_the_output_has():
  inputs, targets = pulses(30, 0, seed=1), pulses(30, 15, seed=2)
  ones, zeros = np.ones((T, D), np.float32), np.zeros((T, D), np.float32)
  like_input = metrics.pair_metrics(2.0 * inputs, inputs, targets, ones,
                                     zeros)
  np.testing.assert_allclose(like_input['rhythm_corr_input'], 1.0, rtol=1e-5)
  assert like_input['rhythm_corr_target'] < -0.5  # opposite phase
  assert like_input['rhythm_preserved'] == 1.0
  np.testing.assert_allclose(like_input['rms_error_input'],
                             np.sqrt(np.mean(inputs ** 2)), rtol=1e-5)
  assert like_input['complementarity'] == 1.0
  assert like_input['input_mask_mean'] == 1.0
  assert like_input['target_mask_mean'] == 0.0
  like_target = metrics.pair_metrics(targets, inputs, targets, ones, ones)
  np.testing.assert_allclose(like_target['rhythm_corr_target'], 1.0,
                             rtol=1e-5)
  assert like_target['rms_error_target'] == 0.0
  assert like_target['rhythm_preserved'] == 0.0
  assert like_target['complementarity'] == 0.0
  assert like_target['coverage'] == 1.0


def test_batch_metrics_average_per_pair():
  inputs = np.stack([pulses(30, 0, seed=3), pulses(20, 5, seed=4)])
  masks = np.ones_like(inputs)
  per_pair = metrics.batch_metrics(inputs, inputs, -inputs, masks, masks)
  assert per_pair['rhythm_preserved'].shape == (2,)
  halves = [{k: v[:1] for k, v in per_pair.items()},
            {k: v[1:] for k, v in per_pair.items()}]
  means = metrics.mean_over_pairs(
      {name: np.concatenate([half[name] for half in halves])
       for name in per_pair})
  np.testing.assert_allclose(means['rms_error_target'], np.mean(
      [np.sqrt(np.mean((2 * x) ** 2)) for x in inputs]), rtol=1e-5)
  assert means['rhythm_preserved'] == 1.0
