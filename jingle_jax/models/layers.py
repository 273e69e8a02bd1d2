"""Building blocks shared by the models: PyTorch's initialisation, dropout and
multi-head attention."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


# torch.nn.Linear and Conv1d weights (SPEC 4.5c): kaiming_uniform with
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


def _mix32(x):
  """lowbias32 (C. Wellons): a well-avalanching 32-bit integer hash."""
  x ^= x >> 16
  x *= np.uint32(0x21F0AAAD)
  x ^= x >> 15
  x *= np.uint32(0x735A2D97)
  return x ^ (x >> 15)


def hashed_bits(seed, shape):
  """uint32 bits of `shape` from a seed uint32[2]: hashes of element indices.

  A counter-based generator like threefry, but a few integer operations per
  element instead of twenty rounds: on CPU, threefry bits for the attention
  dropout masks cost more than the attention itself.
  """
  index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
  return _mix32(_mix32(index + seed[0]) ^ seed[1])


def dropout(x, rate: float, seed):
  """Inverted dropout of x with the keep mask hashed from seed (uint32[2])."""
  keep_prob = 1.0 - rate
  threshold = min(round(keep_prob * 2.0**32), 2**32 - 1)
  keep = hashed_bits(seed, x.shape) < np.uint32(threshold)
  return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype),
                   jnp.zeros((), x.dtype))


def dropout_seed(module: nn.Module):
  """A fresh uint32[2] seed from the module's 'dropout' rng stream."""
  return jax.random.bits(module.make_rng('dropout'), (2,), jnp.uint32)


class Dropout(nn.Module):
  """nn.Dropout (inverted, 'dropout' rng stream) with a cheaper keep mask.

  Each call draws a fresh seed from the rng stream, so masks differ between
  calls and steps and are reproducible from the keys.
  """

  rate: float
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool | None = None):
    deterministic = nn.merge_param('deterministic', self.deterministic,
                                   deterministic)
    if deterministic or self.rate == 0.0:
      return x
    return dropout(x, self.rate, dropout_seed(self))


def attention(q, k, v, dropout_rate: float = 0.0, seed=None):
  """softmax(q k^T / sqrt(h)) v on [B, T, heads, h], dropout on the weights.

  The softmax is normalised after the product with v: dividing the
  [B, T, heads, h] output by the row sums is the same function as dividing
  the [B, heads, T, S] weights, for a fraction of the memory passes, forward
  and backward. Logits, exponentials and row sums in float32.
  """
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  logits = jnp.einsum('btnh,bsnh->bnts', q, k,
                      preferred_element_type=jnp.float32)
  # Any per-row shift cancels in the normalisation: no gradient through it.
  logits -= jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  weights = jnp.exp(logits)
  row_sums = jnp.sum(weights, axis=-1)  # [B, heads, T]
  if dropout_rate:
    weights = dropout(weights, dropout_rate, seed)
  out = jnp.einsum('bnts,bsnh->btnh', weights.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return (out / jnp.swapaxes(row_sums, 1, 2)[..., None]).astype(v.dtype)


def fused_attention(q, k, v):
  """attention(q, k, v) without dropout, fused where the platform can.

  On GPU this is cuDNN's flash attention when its trace-time checks accept
  the dtype and shapes (bfloat16/float16); elsewhere XLA compiles
  `attention`, which ran faster on CPU than jax.nn.dot_product_attention's
  XLA implementation.
  """
  if jax.default_backend() == 'gpu':
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation='cudnn')
    except (ValueError, NotImplementedError, RuntimeError):
      pass  # e.g. float32 inputs or an old cuDNN
  return attention(q, k, v)


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
  remat: bool = False  # recompute dropped-out attention weights in backward

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
    out = self._attend(split_heads(q), split_heads(k), split_heads(v),
                       deterministic)
    out = out.reshape(out.shape[:-2] + (width,))
    return nn.Dense(width, dtype=self.dtype, kernel_init=torch_kernel_init,
                    name='out_proj')(out)

  def _attend(self, q, k, v, deterministic):
    if deterministic or self.attention_dropout == 0.0:
      return fused_attention(q, k, v)
    # Dropout needs the [B, heads, T, S] weights materialised. Rematerialised,
    # only q, k, v and the seed are kept for the backward pass, which
    # recomputes the weights as flash attention does: O(T) activation memory
    # per layer instead of O(T^2), for some recomputation. (XLA's CPU
    # compiler merges the recomputation back into the forward pass.)
    attend = (jax.checkpoint(attention, static_argnums=(3,))
              if self.remat else attention)
    return attend(q, k, v, self.attention_dropout, dropout_seed(self))
