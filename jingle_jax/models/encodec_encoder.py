"""EnCodec's 24 kHz encoder (SEANet, causal) in Flax: audio -> latents.

The layers of encodec 0.1.1's SEANetEncoder for encodec_model_24khz,
channels last: a causal conv 1 -> 32 (kernel 7); four downsampling stages
(residual block with a 1x1 conv shortcut, ELU, strided conv doubling the
channels) with strides 2, 4, 5, 8; a 2-layer LSTM with a skip; ELU and a
causal conv 512 -> 128 (kernel 7). The decoder's shared layers
(jingle_jax.models.seanet), its weights converted the same way. Audio
[B, N] at 24 kHz gives latents [B, ceil(N / 320), 128].
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jingle_jax.data import manifest
from jingle_jax.models import encodec_decoder
from jingle_jax.models import seanet

FIRST_CHANNELS = 32
# Downsampling strides, in order: the decoder's reversed.
STRIDES = tuple(reversed(encodec_decoder.STRIDES))


class DownsampleStage(nn.Module):
  """SEANet's residual block, ELU, and a causal conv of kernel 2 x stride
  and the given stride that doubles the channels."""
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = seanet.residual_block(x, self.dtype)
    return seanet.CausalConv(2 * x.shape[-1], 2 * self.stride, self.stride,
                             dtype=self.dtype, name='downsample')(nn.elu(x))


class EncodecEncoder(nn.Module):
  """24 kHz mono audio [B, N] -> latents [B, ceil(N / 320), 128] (float32)."""
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, audio):
    x = seanet.CausalConv(FIRST_CHANNELS, encodec_decoder.KERNEL_SIZE,
                          dtype=self.dtype, name='conv_in')(audio[..., None])
    for index, stride in enumerate(STRIDES):
      x = DownsampleStage(stride, self.dtype, name=f'stage_{index}')(x)
    x = seanet.skip_lstm(x, encodec_decoder.LSTM_LAYERS, self.dtype)
    x = seanet.CausalConv(manifest.LATENT_DIM, encodec_decoder.KERNEL_SIZE,
                          dtype=self.dtype, name='conv_out')(nn.elu(x))
    return x.astype(jnp.float32)
