"""EnCodec's 24 kHz decoder (SEANet, causal) in Flax: latents -> audio.

The layers of encodec 0.1.1's SEANetDecoder for encodec_model_24khz (DESIGN.md
section 2), channels last: a causal conv 128 -> 512 (kernel 7), a 2-layer
LSTM with a skip, four upsampling stages (ELU, transposed conv, residual
block with a 1x1 conv shortcut) and a causal conv 32 -> 1 (kernel 7).
Weight norm is folded into plain kernels when EnCodec's weights are
converted (jingle_jax.inference.encodec_decoding), so the parameters here
are kernels and biases only. Frames [B, T, 128] give audio [B, T x 320].
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jingle_jax.models import seanet

FIRST_CHANNELS = 512
LSTM_LAYERS = 2
KERNEL_SIZE = 7  # first and last convolutions
# Upsampling strides, in order: 8 x 5 x 4 x 2 = 320 samples per frame.
STRIDES = (8, 5, 4, 2)
HOP = math.prod(STRIDES)


class CausalConvTranspose(nn.Module):
  """encodec's SConvTranspose1d(causal=True) with kernel 2 x stride: the
  kernel - stride samples at the right end are trimmed, so T frames give
  T x stride samples.

  Sample t x stride + j receives frame t's tap j and frame t - 1's tap
  stride + j: one matmul and a shifted sum, no convolution.
  """
  features: int
  stride: int  # the kernel has 2 x stride taps
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, frames, channels = x.shape
    kernel, bias = seanet.kernel_and_bias(
        self, (2 * self.stride, channels, self.features), self.dtype)
    z = jnp.einsum('btc,kco->btko', x.astype(self.dtype), kernel)
    length = frames * self.stride
    current = z[:, :, :self.stride].reshape(batch, length, self.features)
    previous = z[:, :, self.stride:].reshape(batch, length, self.features)
    previous = jnp.pad(previous[:, :length - self.stride],
                       ((0, 0), (self.stride, 0), (0, 0)))
    return current + previous + bias


class UpsampleStage(nn.Module):
  """ELU, transposed conv (channels halved), SEANet residual block: ELU,
  conv k3 to a quarter, ELU, conv k1 back, plus a 1x1 conv shortcut."""
  features: int  # output channels
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = CausalConvTranspose(self.features, self.stride, self.dtype,
                            name='upsample')(nn.elu(x))
    return seanet.residual_block(x, self.dtype)


class EncodecDecoder(nn.Module):
  """Latents [B, T, 128] -> 24 kHz audio [B, T x 320] (float32)."""
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32
  remat: bool = False  # recompute each stage in the backward pass

  @nn.compact
  def __call__(self, latents):
    x = seanet.CausalConv(FIRST_CHANNELS, KERNEL_SIZE, dtype=self.dtype,
                          name='conv_in')(latents)
    x = seanet.skip_lstm(x, LSTM_LAYERS, self.dtype)
    stage = nn.remat(UpsampleStage) if self.remat else UpsampleStage
    features = FIRST_CHANNELS
    for index, stride in enumerate(STRIDES):
      features //= 2
      x = stage(features, stride, self.dtype, name=f'stage_{index}')(x)
    x = seanet.CausalConv(1, KERNEL_SIZE, dtype=self.dtype,
                          name='conv_out')(nn.elu(x))
    return x[..., 0].astype(jnp.float32)
