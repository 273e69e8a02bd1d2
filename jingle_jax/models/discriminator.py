"""The GAN latent discriminator (DESIGN.md 4.4), trained by its own optimiser."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jingle_jax.models.dropout import Dropout
from jingle_jax.models.layers import conv1d
from jingle_jax.models.layers import linear

# (features, kernel size, stride) of each Conv1d; padding is kernel // 2.
CONV_LAYERS = ((256, 3, 2), (512, 5, 2), (512, 7, 2), (256, 9, 1))


class LatentDiscriminator(nn.Module):
  """Latents [B, T, D] -> real/fake logit [B] (float32)."""

  dropout: float = 0.3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents, *, train: bool):
    leaky = lambda h: nn.leaky_relu(h, 0.2)
    drop = Dropout(self.dropout, deterministic=not train)
    h = latents.astype(self.dtype)
    for index, (features, kernel, stride) in enumerate(CONV_LAYERS):
      h = conv1d(features, kernel, h.shape[-1], strides=(stride,),
                 padding=((kernel // 2, kernel // 2),), dtype=self.dtype,
                 name=f'conv_{index}')(h)
      h = drop(leaky(h))
    h = jnp.mean(h.astype(jnp.float32), axis=1)
    h = drop(leaky(linear(128, h.shape[-1], dtype=self.dtype,
                          name='hidden')(h)))
    return linear(1, 128, dtype=self.dtype, name='logit')(h)[:, 0].astype(
        jnp.float32)
