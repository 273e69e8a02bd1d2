"""Regularisers, losses and metrics against their SPEC formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.creative import get_config
from jingle_jax import losses


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
      'mask_reg': 10 * overlap + 0.5 * coverage + 5 * temporal,
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
  assert float(metrics['mask_reg']) == pytest.approx(0.5)


def test_generator_loss_combines_weighted_terms():
  weights = get_config().loss
  output, inputs, targets = jax.random.normal(jax.random.key(1), (3, 2, 40, 8))
  input_mask, target_mask = _random_masks()
  fake_logits = jnp.array([0.3, -1.2])
  loss, metrics = losses.generator_loss(output, inputs, targets, input_mask,
                                        target_mask, fake_logits, weights,
                                        learned_masks=True)
  g_adv = np.mean(np.log1p(np.exp(-np.asarray(fake_logits))))
  recon_input = np.sqrt(np.mean(np.square(output - inputs)))
  assert float(metrics['recon_input']) == pytest.approx(recon_input, rel=1e-5)
  assert float(metrics['g_adv']) == pytest.approx(g_adv, rel=1e-5)
  expected = (1.0 * recon_input + 0.0 * float(metrics['recon_target']) +
              0.1 * float(metrics['mask_reg']) +
              5.0 * float(metrics['balance']) + 0.1 * g_adv)
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(metrics['loss']) == float(loss)
  assert float(metrics['balance_weighted']) == pytest.approx(
      5.0 * float(metrics['balance']))

  fixed_loss, fixed_metrics = losses.generator_loss(
      output, inputs, targets, input_mask, target_mask, None, weights,
      learned_masks=False)
  assert float(fixed_loss) == pytest.approx(recon_input, rel=1e-5)
  assert 'g_adv' not in fixed_metrics


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


def test_rms_is_over_the_whole_tensor():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  assert float(losses.rms(x)) == pytest.approx(np.sqrt(25 / 4))
