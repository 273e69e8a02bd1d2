"""The creative agent: learned complementary masks (DESIGN.md 4.1, 4.2).

Layout is [B, T, D]. Submodule names follow the PyTorch checkpoint keys
(`input_analyzer.0` -> `input_analyzer/layers_0`, and so on).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jingle_jax.models.config import ModelConfig
from jingle_jax.models.layers import conv1d
from jingle_jax.models.layers import MultiheadAttention
from jingle_jax.models.style_discriminator import StyleDiscriminator


def example_rms(x):
  """Root mean square per example over (T, D), 1e-8 inside the sqrt: [B]."""
  return jnp.sqrt(jnp.mean(jnp.square(x), axis=(1, 2)) + 1e-8)


def restore_rms(masked, reference):
  """Rescales each masked example to the RMS of its unmasked reference."""
  return masked * (example_rms(reference) / example_rms(masked))[:, None, None]


class AttentionMaskGenerator(nn.Module):
  """Soft (or Gumbel straight-through hard) masks for an input/target pair."""

  config: ModelConfig

  def setup(self):
    config = self.config

    def conv(features, kernel_size, in_channels):
      return conv1d(features, kernel_size, in_channels, padding='SAME',
                    dtype=config.dtype)

    hidden = config.mask_hidden

    def analyzer():
      return nn.Sequential([conv(hidden, 3, config.latent_dim), nn.relu,
                            conv(hidden, 3, hidden), nn.relu])

    def mask_head():  # mask logits; the sigmoid comes after
      return nn.Sequential([conv(hidden // 2, 3, hidden), nn.relu,
                            conv(config.latent_dim, 1, hidden // 2)])

    self.input_analyzer = analyzer()
    self.target_analyzer = analyzer()
    self.cross_attention = MultiheadAttention(
        config.mask_heads, config.attention_dropout, config.dtype,
        config.attention, config.remat != 'none')
    self.input_mask_generator = mask_head()
    self.target_mask_generator = mask_head()

  def __call__(self, inputs, targets, *, train: bool):
    """Returns (input_mask, target_mask), float32 [B, T, D] in [0, 1]."""
    dtype = self.config.dtype
    input_features = self.input_analyzer(inputs.astype(dtype))
    target_features = self.target_analyzer(targets.astype(dtype))
    # The shared attention runs both directions (input queries target, target
    # queries input) as one call on a doubled batch.
    attended = self.cross_attention(
        jnp.concatenate([input_features, target_features]),
        jnp.concatenate([target_features, input_features]),
        deterministic=not train)
    input_attended, target_attended = jnp.split(attended, 2)
    input_logits = self.input_mask_generator(input_attended)
    target_logits = self.target_mask_generator(target_attended)
    input_logits = input_logits.astype(jnp.float32)
    if self.config.hard_masks:
      # The target head stays in the model (same parameters as soft masks);
      # its unused output is dropped by the compiler.
      input_mask = self._hard_mask(input_logits, train)
      return input_mask, 1.0 - input_mask
    return (jax.nn.sigmoid(input_logits),
            jax.nn.sigmoid(target_logits.astype(jnp.float32)))

  def _hard_mask(self, logits, train):
    """Gumbel-softmax (tau 1, straight-through) over log([m, 1 - m]).

    For two classes the softmax of log([m, 1 - m]) + Gumbel noise equals
    sigmoid(logit + logistic noise), so that is what is sampled. Evaluation
    drops the noise and keeps the argmax.
    """
    if not train:
      return (logits > 0).astype(logits.dtype)
    soft = jax.nn.sigmoid(
        logits + jax.random.logistic(self.make_rng('noise'), logits.shape))
    hard = (soft > 0.5).astype(soft.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)


class CreativeAgent(nn.Module):
  """Mask generator plus the style discriminator that judges patterns."""

  config: ModelConfig

  def setup(self):
    self.mask_generator = AttentionMaskGenerator(self.config)
    self.discriminator = StyleDiscriminator(self.config)

  def __call__(self, inputs, targets, *, train: bool):
    """generate_creative_masks: masked, RMS-restored latents and the masks.

    Returns (masked_input, masked_target, input_mask, target_mask).
    """
    input_mask, target_mask = self.mask_generator(inputs, targets, train=train)
    if self.is_initializing():
      # No loss of the recipe uses the style discriminator, but its weights
      # belong to the model (and to its PyTorch checkpoints).
      self.judge_quality(inputs)
    return (restore_rms(inputs * input_mask, inputs),
            restore_rms(targets * target_mask, targets), input_mask,
            target_mask)

  def judge_quality(self, pattern):
    """(real_fake_score, style_score) of a pattern, each [B] in (0, 1)."""
    return self.discriminator(pattern)
