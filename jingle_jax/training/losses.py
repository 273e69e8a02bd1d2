"""Regularisers, losses and metrics (DESIGN.md 4.1, 4.4, 4.5, 6) as pure functions.

Every function returns float32 scalars; metric dicts use the names logged by
the training loop. Means over the batch take optional example `weights`
[B] (1 for a pair, 0 for a repeat that fills up the last evaluation batch).
"""

import jax
import jax.numpy as jnp
import optax

TEMPORAL_VARIANCE_FLOOR = 0.05


def batch_mean(values, weights=None):
  """Mean over the batch (axis 0) of each example's mean of `values`."""
  per_example = jnp.mean(values.reshape(values.shape[0], -1), axis=1)
  if weights is None:
    return jnp.mean(per_example)
  return jnp.sum(per_example * weights) / jnp.sum(weights)


def rms(x, weights=None):
  """sqrt(mean(x^2)) over the whole tensor."""
  return jnp.sqrt(batch_mean(jnp.square(x), weights))


def mask_metrics(input_mask, target_mask, weights=None):
  """Mask regularisers and statistics; masks [B, T, D], means over B, T, D."""
  input_mask = input_mask.astype(jnp.float32)
  target_mask = target_mask.astype(jnp.float32)
  overlap = batch_mean(input_mask * target_mask, weights)
  coverage = batch_mean(jnp.square(input_mask + target_mask - 1.0), weights)

  def too_static(mask):  # penalises masks whose mean variance over time is low
    variance = batch_mean(jnp.var(mask, axis=1, ddof=1), weights)
    return jax.nn.relu(TEMPORAL_VARIANCE_FLOOR - variance)

  temporal = too_static(input_mask) + too_static(target_mask)
  input_mean = batch_mean(input_mask, weights)
  target_mean = batch_mean(target_mask, weights)
  return {
      'overlap': overlap,
      'complementarity': 1.0 - overlap,
      'coverage': coverage,
      'temporal': temporal,
      'balance': jnp.square(input_mean - 0.5) + jnp.square(target_mean - 0.5),
      'input_mask_mean': input_mean,
      'target_mask_mean': target_mean,
  }


def pair_balance(input_mask, target_mask, weights=None):
  """The balance term taken per pair: the mean over the batch of each pair's
  (mean(m_in) - 0.5)^2 + (mean(m_tgt) - 0.5)^2."""
  def lean(mask):
    return jnp.square(jnp.mean(mask.reshape(mask.shape[0], -1).astype(
        jnp.float32), axis=1) - 0.5)
  return batch_mean(lean(input_mask) + lean(target_mask), weights)


def bce_with_logits(logits, label: float, weights=None):
  """Mean binary cross-entropy of logits [B] against a constant label."""
  labels = jnp.full_like(logits, label)
  return batch_mean(optax.sigmoid_binary_cross_entropy(logits, labels),
                    weights)


def validation_loss(output, inputs, targets, input_mask, target_mask,
                    weights, learned_masks: bool, example_weights=None):
  """DESIGN.md 4.5b: returns (loss, metrics).

  The weighted reconstruction terms plus mask_reg_weight x mask_reg (DESIGN.md
  4.1, with learned masks only): no balance and no adversarial term.

  Args:
    output, inputs, targets: latents [B, T, D].
    input_mask, target_mask: the masks the model applied [B, T, D].
    weights: the config's `loss` block.
    learned_masks: whether the masks are learned (their regularisers join the
      loss) or fixed (they are only reported).
    example_weights: [B] or None (see the module's docstring).
  """
  metrics = mask_metrics(input_mask, target_mask, example_weights)
  metrics['mask_reg'] = (weights.overlap_weight * metrics['overlap'] +
                         weights.coverage_weight * metrics['coverage'] +
                         weights.temporal_weight * metrics['temporal'])
  balance = metrics['balance']
  if weights.balance_per_pair:
    balance = metrics['pair_balance'] = pair_balance(
        input_mask, target_mask, example_weights)
  metrics['balance_weighted'] = weights.balance_weight * balance
  metrics['recon_input'] = rms(output - inputs, example_weights)
  metrics['recon_target'] = rms(output - targets, example_weights)
  loss = (weights.input_weight * metrics['recon_input'] +
          weights.target_weight * metrics['recon_target'])
  if learned_masks:
    loss += weights.mask_reg_weight * metrics['mask_reg']
  return loss, metrics


def generator_loss(output, inputs, targets, input_mask, target_mask,
                   fake_logits, weights, learned_masks: bool):
  """DESIGN.md 4.5: the validation loss, balance and adversarial terms.

  Arguments as validation_loss's; fake_logits: the GAN discriminator's logits
  on `output`, or None without GAN. Returns (loss, metrics).
  """
  loss, metrics = validation_loss(output, inputs, targets, input_mask,
                                  target_mask, weights, learned_masks)
  if learned_masks:
    loss += metrics['balance_weighted']
  if fake_logits is not None:
    metrics['g_adv'] = bce_with_logits(fake_logits, 1.0)
    loss += weights.gan_weight * metrics['g_adv']
  metrics['loss'] = loss
  return loss, metrics


def discriminator_loss(real_logits, fake_logits, weights=None, *,
                       real_label=1.0):
  """BCE(real, real_label) + BCE(fake, 0); returns (d_loss, metrics with
  accuracies)."""
  d_loss = (bce_with_logits(real_logits, real_label, weights) +
            bce_with_logits(fake_logits, 0.0, weights))
  return d_loss, {
      'd_loss': d_loss,
      'd_real_acc': batch_mean((real_logits > 0).astype(jnp.float32),
                               weights),
      'd_fake_acc': batch_mean((fake_logits < 0).astype(jnp.float32),
                               weights),
  }
