"""The creative agent's style discriminator.

No loss of the recipe uses it (DESIGN.md 4.2): it is kept because its
weights belong to the model, so that the original's checkpoints load
(jingle_jax.training.torch_checkpoint) and the parameter count is the
original's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jingle_jax.models.config import ModelConfig
from jingle_jax.models.layers import conv1d
from jingle_jax.models.layers import linear


class StyleDiscriminator(nn.Module):
  """Real/fake and style scores of a latent pattern (~198K parameters)."""

  config: ModelConfig

  def setup(self):
    dtype = self.config.dtype

    def down(features, in_channels):  # Conv1d(k4, s2, p1) halves the frames
      return conv1d(features, 4, in_channels, strides=(2,),
                    padding=((1, 1),), dtype=dtype)

    leaky = lambda x: nn.leaky_relu(x, 0.2)
    self.encoder = nn.Sequential([down(64, self.config.latent_dim), leaky,
                                  down(128, 64), leaky, down(256, 128), leaky])
    self.classifier = linear(1, 256, dtype=dtype)
    self.style_matcher = linear(1, 512, dtype=dtype)

  def __call__(self, pattern):
    """pattern [B, T, D] -> (real_fake_score [B], style_score [B])."""
    features = self.encoder(pattern.astype(self.config.dtype)).astype(
        jnp.float32)
    mean = jnp.mean(features, axis=1)
    std = jnp.std(features, axis=1, ddof=1)
    real_fake = jax.nn.sigmoid(self.classifier(mean))[:, 0]
    style = jax.nn.sigmoid(
        self.style_matcher(jnp.concatenate([mean, std], axis=-1)))[:, 0]
    return real_fake.astype(jnp.float32), style.astype(jnp.float32)
