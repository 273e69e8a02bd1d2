"""Dropout whose keep mask is a hash of (seed, element index).

A counter-based generator like threefry, but cheap: one 32-bit hash gives
the 8-bit draws of four neighbouring elements along the last axis. Element
[..., i] of an array of shape [..., L] draws byte i % 4 of the hash of
counter r * ceil(L / 4) + i // 4, where r is the flat index of [...]. The
fused attention kernel computes the same function block by block, so both
attention implementations drop the same weights.

With 8-bit draws a rate is realised as a multiple of 1/256 (0.1 as
26/256 = 0.1016); the kept values are divided by the realised keep
probability, so the expectation is unchanged.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

DRAWS_PER_HASH = 4  # 8-bit draws from one 32-bit hash
_LEVELS = 256


def _mix32(x):
  """lowbias32 (C. Wellons): a well-avalanching 32-bit integer hash."""
  x ^= x >> 16
  x *= np.uint32(0x21F0AAAD)
  x ^= x >> 15
  x *= np.uint32(0x735A2D97)
  return x ^ (x >> 15)


def drop_threshold(rate: float) -> int:
  """Draws (0..255) below this are dropped: rate x 256, rounded; 0 for none.

  A rate between 0 and 1 drops at least one level and keeps at least one.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'dropout rate {rate} is not in [0, 1)')
  if rate == 0.0:
    return 0
  return min(max(round(rate * _LEVELS), 1), _LEVELS - 1)


def keep_probability(rate: float) -> float:
  """The realised probability of keeping an element."""
  return 1.0 - drop_threshold(rate) / _LEVELS


def hash32(counters, seed):
  """uint32 hashes of uint32 counters under a uint32[2] seed."""
  return _mix32(_mix32(counters + seed[0]) ^ seed[1])


def _draw(bits, index):
  """Byte `index` (0..3, least significant first) of 32-bit hashes."""
  return (bits >> (index * np.uint32(8))) & np.uint32(_LEVELS - 1)


def keep_mask(seed, counters, rate: float):
  """bool [..., 4G] keep flags of uint32 counters [..., G], one hash each.

  seed: anything indexable with seed[0], seed[1] as uint32 (an array or, in
  a kernel, a ref). Element 4g + j draws byte j of counter g's hash. What
  the fused attention kernels evaluate block by block.
  """
  bits = hash32(counters, seed)
  index = jax.lax.broadcasted_iota(
      jnp.uint32, (1,) * bits.ndim + (DRAWS_PER_HASH,), bits.ndim)
  draws = _draw(bits[..., None], index).reshape(
      bits.shape[:-1] + (DRAWS_PER_HASH * bits.shape[-1],))
  return draws >= np.uint32(drop_threshold(rate))


def num_groups(length: int) -> int:
  """Hashes per row of `length` elements."""
  return -(-length // DRAWS_PER_HASH)


def dropout(x, rate: float, seed):
  """Inverted dropout of x with the keep mask hashed from seed (uint32[2]).

  The same flags as keep_mask, element by element: XLA fuses a hash that
  is broadcast to four elements into each of them anyway, and on a CPU the
  broadcast form compiled and ran slower than this one.
  """
  rows = jax.lax.iota(jnp.uint32, int(np.prod(x.shape[:-1]))).reshape(
      x.shape[:-1] + (1,))
  columns = jax.lax.broadcasted_iota(jnp.uint32, x.shape, x.ndim - 1)
  bits = hash32(rows * np.uint32(num_groups(x.shape[-1])) +
               columns // DRAWS_PER_HASH, seed)
  keep = _draw(bits, columns % DRAWS_PER_HASH) >= np.uint32(
      drop_threshold(rate))
  return jnp.where(keep, x / jnp.asarray(keep_probability(rate), x.dtype),
                   jnp.zeros((), x.dtype))


def dropout_seed(module: nn.Module):
  """A fresh uint32[2] seed from the module's 'dropout' rng stream."""
  return jax.random.key_data(module.make_rng('dropout'))


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
