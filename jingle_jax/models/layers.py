"""Building blocks shared by the models: dropout and multi-head attention."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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
    keep_prob = 1.0 - self.rate
    seed = jax.random.bits(self.make_rng('dropout'), (2,), jnp.uint32)
    threshold = min(round(keep_prob * 2.0**32), 2**32 - 1)
    keep = hashed_bits(seed, x.shape) < np.uint32(threshold)
    return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype),
                     jnp.zeros((), x.dtype))


def fused_attention(q, k, v):
  """softmax(q k^T / sqrt(h)) v on [B, T, heads, h], fused where possible.

  On GPU this is cuDNN's flash attention when its trace-time checks accept
  the dtype and shapes (bfloat16/float16); otherwise, and on CPU and TPU,
  XLA's implementation.
  """
  if jax.default_backend() == 'gpu':
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation='cudnn')
    except (ValueError, NotImplementedError, RuntimeError):
      pass  # e.g. float32 inputs or an old cuDNN
  return jax.nn.dot_product_attention(q, k, v)


class MultiheadAttention(nn.Module):
  """Attention with one stacked q/k/v input projection and an output projection.

  `in_proj_kernel` is PyTorch's `in_proj_weight` transposed ([d, 3d], columns
  q, k, v), so checkpoints convert without splitting. Dropout acts on the
  attention weights, as in PyTorch.
  """

  num_heads: int
  attention_dropout: float = 0.0
  dtype: Any = jnp.float32

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
    return nn.Dense(width, dtype=self.dtype, name='out_proj')(out)

  def _attend(self, q, k, v, deterministic):
    if deterministic or self.attention_dropout == 0.0:
      return fused_attention(q, k, v)
    # Dropout on the weights needs them materialised; softmax in float32.
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k,
                        preferred_element_type=jnp.float32)
    weights = Dropout(self.attention_dropout)(
        jax.nn.softmax(logits, axis=-1), deterministic=False)
    return jnp.einsum('bnts,bsnh->btnh', weights.astype(v.dtype), v)
