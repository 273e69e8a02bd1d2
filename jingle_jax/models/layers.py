"""Building blocks shared by the models: PyTorch's initialisation, layer
normalisation and multi-head attention."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jingle_jax.models import attention
from jingle_jax.models.dropout import dropout_seed


# torch.nn.Linear and Conv1d weights (DESIGN.md 4.5c): kaiming_uniform with
# a = sqrt(5) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in x kernel.
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
  """torch.nn.Linear and Conv1d biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = fan_in ** -0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def linear(features: int, fan_in: int, **kwargs) -> nn.Dense:
  """nn.Dense initialised as torch.nn.Linear(fan_in, features)."""
  return nn.Dense(features, kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(fan_in), **kwargs)


def conv1d(features: int, kernel_size: int, in_channels: int,
           **kwargs) -> nn.Conv:
  """nn.Conv initialised as torch.nn.Conv1d(in_channels, features, k)."""
  return nn.Conv(features, (kernel_size,), kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(in_channels * kernel_size),
                 **kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon):
  """torch.nn.LayerNorm over the last axis, in float32, with its backward
  pass written out: autodiff of the forward compiles to about three times
  the kernels (the statistics, their derivatives and casts each their own).
  """
  return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_forward(x, scale, bias, epsilon):
  """(x - mean) / std * scale + bias, the variance that of the centred
  values (two passes, as PyTorch's)."""
  centred = x.astype(jnp.float32)
  centred = centred - centred.mean(-1, keepdims=True)
  inverse_std = jax.lax.rsqrt(
      (centred * centred).mean(-1, keepdims=True) + epsilon)
  normalized = centred * inverse_std
  # the zero carries x's dtype, which its cotangent takes
  return normalized * scale + bias, (normalized, inverse_std, scale,
                                     jnp.zeros((), x.dtype))


def _layer_norm_backward(epsilon, residuals, grad):
  del epsilon
  normalized, inverse_std, scale, like_x = residuals
  grad = grad.astype(jnp.float32)
  batch_axes = tuple(range(grad.ndim - 1))
  scaled = grad * scale
  grad_x = inverse_std * (
      scaled - scaled.mean(-1, keepdims=True)
      - normalized * (scaled * normalized).mean(-1, keepdims=True))
  return (grad_x.astype(like_x.dtype), (grad * normalized).sum(batch_axes),
          grad.sum(batch_axes))


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


class LayerNorm(nn.Module):
  """torch.nn.LayerNorm(width, eps) as nn.LayerNorm names it (`scale`,
  `bias`), computed in float32 and given in `dtype`."""

  epsilon: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones_init(), (width,))
    bias = self.param('bias', nn.initializers.zeros_init(), (width,))
    return layer_norm(x, scale, bias, self.epsilon).astype(self.dtype)


class MultiheadAttention(nn.Module):
  """Attention with one stacked q/k/v input projection and an output projection.

  `in_proj_kernel` is PyTorch's `in_proj_weight` transposed ([d, 3d], columns
  q, k, v), so checkpoints convert without splitting. Dropout acts on the
  attention weights, and initialisation is torch.nn.MultiheadAttention's:
  Xavier-uniform in_proj, zero biases, out_proj as a Linear's weight.
  """

  num_heads: int
  attention_dropout: float = 0.0
  dtype: Any = jnp.float32
  implementation: str = 'xla'  # attention.IMPLEMENTATIONS
  remat: bool = False  # 'xla': recompute dropped-out weights in backward

  @nn.compact
  def __call__(self, queries, keys_values=None, *, deterministic: bool):
    """queries [B, T, d]; keys_values [B, S, d] or None for self-attention."""
    width = queries.shape[-1]
    kernel = self.param('in_proj_kernel', nn.initializers.xavier_uniform(),
                        (width, 3 * width))
    bias = self.param('in_proj_bias', nn.initializers.zeros_init(),
                      (3 * width,))
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    queries = queries.astype(self.dtype)
    if keys_values is None:  # one matmul gives q, k and v
      q, k, v = jnp.split(queries @ kernel + bias, 3, axis=-1)
    else:
      q = queries @ kernel[:, :width] + bias[:width]
      kv = keys_values.astype(self.dtype) @ kernel[:, width:] + bias[width:]
      k, v = jnp.split(kv, 2, axis=-1)
    split_heads = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, -1))
    rate = 0.0 if deterministic else self.attention_dropout
    out = attention.attend(
        split_heads(q), split_heads(k), split_heads(v), rate,
        dropout_seed(self) if rate else None, self.implementation,
        self.remat)
    out = out.reshape(out.shape[:-2] + (width,))
    return nn.Dense(width, dtype=self.dtype, kernel_init=torch_kernel_init,
                    name='out_proj')(out)
