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
import jax
import jax.numpy as jnp

FIRST_CHANNELS = 512
LSTM_LAYERS = 2
KERNEL_SIZE = 7  # first and last convolutions
RESIDUAL_KERNEL_SIZE = 3
# Upsampling strides, in order: 8 x 5 x 4 x 2 = 320 samples per frame.
STRIDES = (8, 5, 4, 2)
HOP = math.prod(STRIDES)


def causal_pad(x, padding: int):
  """Left reflect padding of [B, T, C], as encodec's pad1d: an input not
  longer than the padding is first extended with zeros on the right, and
  they are cut off again afterwards."""
  extra = max(padding - x.shape[1] + 1, 0)
  x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
  x = jnp.pad(x, ((0, 0), (padding, 0), (0, 0)), mode='reflect')
  return x[:, :x.shape[1] - extra]


def _kernel_and_bias(module, kernel_shape, dtype):
  """A conv's kernel [taps, in, out] and bias [out], in the compute dtype."""
  kernel = module.param('kernel', nn.initializers.lecun_normal(), kernel_shape)
  bias = module.param('bias', nn.initializers.zeros, kernel_shape[-1:])
  return kernel.astype(dtype), bias.astype(dtype)


class CausalConv(nn.Module):
  """encodec's SConv1d(causal=True, stride 1): reflect-pad left, convolve."""
  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel, bias = _kernel_and_bias(
        self, (self.kernel_size, x.shape[-1], self.features), self.dtype)
    x = x.astype(self.dtype)
    if self.kernel_size > 1:
      x = causal_pad(x, self.kernel_size - 1)
    y = jax.lax.conv_general_dilated(
        x, kernel, (1,), 'VALID', dimension_numbers=('NWC', 'WIO', 'NWC'))
    return y + bias


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
    kernel, bias = _kernel_and_bias(
        self, (2 * self.stride, channels, self.features), self.dtype)
    z = jnp.einsum('btc,kco->btko', x.astype(self.dtype), kernel)
    length = frames * self.stride
    current = z[:, :, :self.stride].reshape(batch, length, self.features)
    previous = z[:, :, self.stride:].reshape(batch, length, self.features)
    previous = jnp.pad(previous[:, :length - self.stride],
                       ((0, 0), (self.stride, 0), (0, 0)))
    return current + previous + bias


class LSTM(nn.Module):
  """torch.nn.LSTM (gates i, f, g, o; b_ih + b_hh as one bias), one layer,
  over time as a scan. The input projection of every step is one matmul
  before the scan; the cell state stays float32."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    gates = 4 * self.features
    input_kernel = self.param('input_kernel', nn.initializers.lecun_normal(),
                              (x.shape[-1], gates))
    recurrent_kernel = self.param('recurrent_kernel',
                                  nn.initializers.orthogonal(),
                                  (self.features, gates))
    bias = self.param('bias', nn.initializers.zeros, (gates,))
    projected = (x.astype(self.dtype) @ input_kernel.astype(self.dtype)
                 + bias.astype(self.dtype))
    recurrent_kernel = recurrent_kernel.astype(self.dtype)

    def step(carry, projected_t):
      hidden, cell = carry
      z = (projected_t + hidden @ recurrent_kernel).astype(jnp.float32)
      i, f, g, o = jnp.split(z, 4, axis=-1)
      cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
      hidden = (jax.nn.sigmoid(o) * jnp.tanh(cell)).astype(self.dtype)
      return (hidden, cell), hidden

    batch = x.shape[0]
    initial = (jnp.zeros((batch, self.features), self.dtype),
               jnp.zeros((batch, self.features), jnp.float32))
    _, outputs = jax.lax.scan(step, initial, jnp.swapaxes(projected, 0, 1))
    return jnp.swapaxes(outputs, 0, 1)


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
    hidden = CausalConv(self.features // 2, RESIDUAL_KERNEL_SIZE, self.dtype,
                        name='residual_conv')(nn.elu(x))
    hidden = CausalConv(self.features, 1, self.dtype,
                        name='residual_out')(nn.elu(hidden))
    return CausalConv(self.features, 1, self.dtype, name='shortcut')(x) + hidden


class EncodecDecoder(nn.Module):
  """Latents [B, T, 128] -> 24 kHz audio [B, T x 320] (float32)."""
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32
  remat: bool = False  # recompute each stage in the backward pass

  @nn.compact
  def __call__(self, latents):
    x = CausalConv(FIRST_CHANNELS, KERNEL_SIZE, self.dtype,
                   name='conv_in')(latents)
    y = x
    for layer in range(LSTM_LAYERS):
      y = LSTM(FIRST_CHANNELS, self.dtype, name=f'lstm_{layer}')(y)
    x = x + y
    stage = nn.remat(UpsampleStage) if self.remat else UpsampleStage
    features = FIRST_CHANNELS
    for index, stride in enumerate(STRIDES):
      features //= 2
      x = stage(features, stride, self.dtype, name=f'stage_{index}')(x)
    x = CausalConv(1, KERNEL_SIZE, self.dtype, name='conv_out')(nn.elu(x))
    return x[..., 0].astype(jnp.float32)
