"""Regularisers, losses and metrics against their DESIGN.md formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jingle_jax.config import run_config
from jingle_jax.training import losses


def _random_masks(shape=(2, 40, 8)):
  input_rng, target_rng = jax.random.split(jax.random.key(0))
  return (jax.random.uniform(input_rng, shape),
          jax.random.uniform(target_rng, shape))


def test_mask_metrics_match_numpy_formulas():
  input_mask, target_mask = _random_masks()
  metrics = losses.mask_metrics(input_mask, target_mask)
  m_in, m_tgt = np.asarray(input_mask, np.float64), np.asarray(target_mask,
                                                                np.float64)
  overlap = np.mean(m_in * m_tgt)
  coverage = np.mean((m_in + m_tgt - 1) ** 2)
  temporal = (max(0.0, 0.05 - np.var(m_in, axis=1, ddof=1).mean()) +
              max(0.0, 0.05 - np.var(m_tgt, axis=1, ddof=1).mean()))
  expected = {
      'overlap': overlap,
      'complementarity': 1 - overlap,
      'coverage': coverage,
      'temporal': temporal,
      'balance': (m_in.mean() - 0.5) ** 2 + (m_tgt.mean() - 0.5) ** 2,
      'input_mask_mean': m_in.mean(),
      'target_mask_mean': m_tgt.mean(),
  }
  assert set(metrics) == set(expected)
  for name, value in expected.items():
    assert float(metrics[name]) == pytest.approx(value, rel=1e-5,
                                                 abs=1e-7), name


def test_disjoint_constant_masks():
  ones = jnp.ones((2, 10, 4))
  metrics = losses.mask_metrics(ones, jnp.zeros_like(ones))
  assert float(metrics['complementarity']) == 1.0
  assert float(metrics['coverage']) == 0.0
  assert float(metrics['balance']) == pytest.approx(0.5)
  # Constant masks have no temporal variance: both floors are hit.
  assert float(metrics['temporal']) == pytest.approx(0.1)


def test_pair_balance_penalises_pairs_that_lean_though_the_batch_does_not():
  # Pair 0 takes most of its input, pair 1 little: the batch's means are
  # 0.5 (no batch balance), each pair's are 0.8 and 0.2.
  leaning = jnp.stack([jnp.full((10, 4), 0.8), jnp.full((10, 4), 0.2)])
  assert float(losses.mask_metrics(leaning, 1.0 - leaning)['balance']) == (
      pytest.approx(0.0, abs=1e-12))
  assert float(losses.pair_balance(leaning, 1.0 - leaning)) == pytest.approx(
      2 * 0.3 ** 2)
  weights = run_config.LossConfig(balance_per_pair=True)
  output = jnp.zeros((2, 10, 4))
  loss, metrics = losses.generator_loss(output, output, output, leaning,
                                        1.0 - leaning, None, weights,
                                        learned_masks=True)
  val_loss, val_metrics = losses.validation_loss(
      output, output, output, leaning, 1.0 - leaning, weights,
      learned_masks=True, example_weights=jnp.array([1.0, 0.0]))
  assert float(metrics['balance_weighted']) == pytest.approx(5.0 * 0.18)
  assert float(loss - val_loss) == pytest.approx(5.0 * 0.18)
  # Validation reports it too, over the pairs it weighs.
  assert float(val_metrics['pair_balance']) == pytest.approx(2 * 0.3 ** 2)
  assert float(losses.pair_balance(
      leaning, jnp.full_like(leaning, 0.5), jnp.array([0.0, 1.0]))) == (
          pytest.approx(0.3 ** 2))


def test_generator_and_validation_losses_combine_weighted_terms():
  weights = run_config.LossConfig(input_weight=0.7, target_weight=0.2,
                                  overlap_weight=10.0)  # the published code's
  output, inputs, targets = jax.random.normal(jax.random.key(1), (3, 2, 40, 8))
  input_mask, target_mask = _random_masks()
  fake_logits = jnp.array([0.3, -1.2])
  loss, metrics = losses.generator_loss(output, inputs, targets, input_mask,
                                        target_mask, fake_logits, weights,
                                        learned_masks=True)
  g_adv = np.mean(np.log1p(np.exp(-np.asarray(fake_logits))))
  recon_input = np.sqrt(np.mean(np.square(output - inputs)))
  recon_target = np.sqrt(np.mean(np.square(output - targets)))
  m = {name: float(value) for name, value in metrics.items()}
  assert m['recon_input'] == pytest.approx(recon_input, rel=1e-5)
  assert m['recon_target'] == pytest.approx(recon_target, rel=1e-5)
  assert m['g_adv'] == pytest.approx(g_adv, rel=1e-5)
  assert m['mask_reg'] == pytest.approx(
      10.0 * m['overlap'] + 0.5 * m['coverage'] + 5.0 * m['temporal'])
  assert m['balance_weighted'] == pytest.approx(5.0 * m['balance'])
  validation = 0.7 * recon_input + 0.2 * recon_target + 0.1 * m['mask_reg']
  assert float(loss) == pytest.approx(
      validation + 5.0 * m['balance'] + 0.1 * g_adv, rel=1e-5)
  assert m['loss'] == float(loss)
  # DESIGN.md 4.5b: no balance, no adversarial term.
  val_loss, val_metrics = losses.validation_loss(
      output, inputs, targets, input_mask, target_mask, weights,
      learned_masks=True)
  assert float(val_loss) == pytest.approx(validation, rel=1e-5)
  assert 'g_adv' not in val_metrics and 'loss' not in val_metrics

  # Fixed masks: their regularisers are reported, not trained.
  fixed_loss, fixed_metrics = losses.generator_loss(
      output, inputs, targets, input_mask, target_mask, None, weights,
      learned_masks=False)
  assert float(fixed_loss) == pytest.approx(
      0.7 * recon_input + 0.2 * recon_target, rel=1e-5)
  assert 'g_adv' not in fixed_metrics and 'mask_reg' in fixed_metrics


def test_discriminator_loss_and_accuracies():
  real_logits = jnp.array([2.0, -1.0, 0.5, 3.0])
  fake_logits = jnp.array([-2.0, 1.0, -0.5, -3.0])
  d_loss, metrics = losses.discriminator_loss(real_logits, fake_logits)
  softplus = lambda x: np.log1p(np.exp(x))
  expected = (np.mean(softplus(-np.asarray(real_logits))) +
              np.mean(softplus(np.asarray(fake_logits))))
  assert float(d_loss) == pytest.approx(expected, rel=1e-6)
  assert float(metrics['d_real_acc']) == 0.75
  assert float(metrics['d_fake_acc']) == 0.75
  # One-sided label smoothing: real samples' label 0.9, fakes' still 0.
  smoothed, _ = losses.discriminator_loss(real_logits, fake_logits,
                                          real_label=0.9)
  expected += 0.1 * np.mean(np.asarray(real_logits))  # the BCE's label term
  assert float(smoothed) == pytest.approx(expected, rel=1e-6)


def test_rms_is_over_the_whole_tensor():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  assert float(losses.rms(x)) == pytest.approx(np.sqrt(25 / 4))
