"""The layers EnCodec's SEANet encoder and decoder share, channels last.

encodec 0.1.1's causal SConv1d and SLSTM: weight norm is folded into plain
kernels when EnCodec's weights are converted
(precompute/jax_weights.py), so the parameters here are kernels and
biases only.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

RESIDUAL_KERNEL_SIZE = 3  # the residual blocks' first convolution


def reflect_pad(x, left: int, right: int):
  """Reflect padding of [B, T, C] in time, as encodec's pad1d: an input not
  longer than the larger padding is first extended with zeros on the right,
  and they are cut off again afterwards."""
  extra = max(max(left, right) - x.shape[1] + 1, 0)
  x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
  x = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode='reflect')
  return x[:, :x.shape[1] - extra]


def kernel_and_bias(module, kernel_shape, dtype):
  """A conv's kernel [taps, in, out] and bias [out], in the compute dtype."""
  kernel = module.param('kernel', nn.initializers.lecun_normal(), kernel_shape)
  bias = module.param('bias', nn.initializers.zeros, kernel_shape[-1:])
  return kernel.astype(dtype), bias.astype(dtype)


class CausalConv(nn.Module):
  """encodec's SConv1d(causal=True): kernel - stride samples reflected on
  the left, and on the right as many as make the last window whole, so T
  samples give ceil(T / stride) outputs."""
  features: int
  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel, bias = kernel_and_bias(
        self, (self.kernel_size, x.shape[-1], self.features), self.dtype)
    outputs = -(-x.shape[1] // self.stride)
    left = self.kernel_size - self.stride
    right = (outputs - 1) * self.stride + self.kernel_size - left - x.shape[1]
    x = reflect_pad(x.astype(self.dtype), left, right)
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.stride,), 'VALID',
        dimension_numbers=('NWC', 'WIO', 'NWC'))
    return y + bias


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


def skip_lstm(x, layers: int, dtype):
  """encodec's SLSTM: `layers` stacked LSTMs (lstm_0, ...), their input
  added back. Called within a compact module, which holds the layers."""
  y = x
  for layer in range(layers):
    y = LSTM(x.shape[-1], dtype, name=f'lstm_{layer}')(y)
  return x + y


def residual_block(x, dtype):
  """SEANet's residual block: ELU, conv k3 to half the channels, ELU, conv
  k1 back, plus a 1x1 conv shortcut. Called within a compact module, which
  holds the convolutions (residual_conv, residual_out, shortcut)."""
  features = x.shape[-1]
  hidden = CausalConv(features // 2, RESIDUAL_KERNEL_SIZE, dtype=dtype,
                      name='residual_conv')(nn.elu(x))
  hidden = CausalConv(features, 1, dtype=dtype,
                      name='residual_out')(nn.elu(hidden))
  return CausalConv(features, 1, dtype=dtype, name='shortcut')(x) + hidden
