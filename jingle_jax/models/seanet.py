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


def _gates(z):
  """The gates i, f, g, o of float32 pre-activations z [..., 4H]."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _recurrence_steps(projected, recurrent_kernel):
  """(hidden [T, B, H] in the compute dtype, pre-activations z [T, B, 4H]
  in it, cell [T, B, H] float32) over time-major inputs projected [T, B,
  4H], from zero states."""
  batch, width = projected.shape[1], recurrent_kernel.shape[0]

  def step(carry, projected_t):
    hidden, cell = carry
    z = projected_t + hidden @ recurrent_kernel
    i, f, g, o = _gates(z.astype(jnp.float32))
    cell = f * cell + i * g
    hidden = (o * jnp.tanh(cell)).astype(projected.dtype)
    return (hidden, cell), (hidden, z, cell)

  initial = (jnp.zeros((batch, width), projected.dtype),
             jnp.zeros((batch, width), jnp.float32))
  return jax.lax.scan(step, initial, projected)[1]


@jax.custom_vjp
def recurrence(projected, recurrent_kernel):
  """An LSTM's hidden states [T, B, H] over time-major projected inputs
  [T, B, 4H] (x W_ih + b), from zero states.

  Its backward pass is written out: a scan that keeps, per step, only the
  pre-activations and the cell (the carries' gradients in float32), and
  one matmul after it for the recurrent kernel's gradient. Traced by
  autodiff, every intermediate of a step was kept, each a write per step
  and a kernel of its own on a GPU (docs/BENCHMARKS.md, "the GPU
  compiler's kernels").
  """
  return _recurrence_steps(projected, recurrent_kernel)[0]


def _recurrence_forward(projected, recurrent_kernel):
  hidden, z, cell = _recurrence_steps(projected, recurrent_kernel)
  return hidden, (recurrent_kernel, hidden, z, cell)


def _recurrence_backward(residuals, d_hidden):
  recurrent_kernel, hidden, z, cell = residuals
  dtype = hidden.dtype
  shifted = lambda x: jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]])

  def step(carry, inputs):
    d_recurrent, d_cell = carry  # from step t + 1, float32
    d_hidden_t, z_t, cell_t, previous_cell = inputs
    i, f, g, o = _gates(z_t.astype(jnp.float32))
    tanh_cell = jnp.tanh(cell_t)
    d_h = d_hidden_t.astype(jnp.float32) + d_recurrent
    d_cell = d_cell + d_h * o * (1 - tanh_cell * tanh_cell)
    d_z = jnp.concatenate([d_cell * g * i * (1 - i),
                           d_cell * previous_cell * f * (1 - f),
                           d_cell * i * (1 - g * g),
                           d_h * tanh_cell * o * (1 - o)], axis=-1)
    d_z = d_z.astype(dtype)
    d_recurrent = (d_z @ recurrent_kernel.T).astype(jnp.float32)
    return (d_recurrent, d_cell * f), d_z

  initial = (jnp.zeros(hidden.shape[1:], jnp.float32),) * 2
  _, d_z = jax.lax.scan(step, initial,
                        (d_hidden, z, cell, shifted(cell)), reverse=True)
  d_kernel = jnp.einsum('tbh,tbg->hg', shifted(hidden), d_z,
                        preferred_element_type=jnp.float32)
  return d_z, d_kernel.astype(recurrent_kernel.dtype)


recurrence.defvjp(_recurrence_forward, _recurrence_backward)


class LSTM(nn.Module):
  """torch.nn.LSTM (gates i, f, g, o; b_ih + b_hh as one bias), one layer:
  the input projection of every step is one matmul before `recurrence`;
  the cell state stays float32."""
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
    hidden = recurrence(jnp.swapaxes(projected, 0, 1),
                        recurrent_kernel.astype(self.dtype))
    return jnp.swapaxes(hidden, 0, 1)


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
