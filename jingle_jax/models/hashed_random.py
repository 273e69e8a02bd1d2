"""A counter-based PRNG for a training step's dropout and noise.

JAX's default, threefry, derives each key in a small loop of kernels of its
own, and a step derives dozens (each dropout call of each layer, the noise):
a fifth of the compiled seed step's kernels on a CPU. Here a key, a split or
a draw is a few integer operations (dropout.hash32 of counters) that fuse
into what uses them. Keys are uint32[2], as threefry's are, so the data of a
threefry key serves as a key.
"""

import math

import jax
from jax.extend import random as jax_random
import jax.numpy as jnp
import numpy as np

from jingle_jax.models.dropout import hash32

# Each use hashes its counters in a domain of its own.
_FOLD_IN, _SPLIT, _BITS = (np.uint32(0x9E3779B9), np.uint32(0x85EBCA6B),
                           np.uint32(0xC2B2AE35))


def _key(seed_words, domain):
  return jnp.stack([seed_words[0] ^ domain, seed_words[1]])


def _seed(seed):
  return jnp.stack([jnp.uint32(0), jnp.asarray(seed).astype(jnp.uint32)])


def _counters(count: int):
  if count > 1 << 32:
    raise ValueError(f'{count} draws from one key exceed its 2^32 counters')
  return jax.lax.iota(jnp.uint32, count)


def _split(key, shape):
  count = math.prod(shape)
  counters = _counters(2 * count)
  words = hash32(counters, _key(key, _SPLIT))
  return words.reshape(tuple(shape) + (2,))


def _fold_in(key, data):
  data = jnp.asarray(data).astype(jnp.uint32)
  return hash32(jnp.stack([2 * data, 2 * data + 1]), _key(key, _FOLD_IN))


def _random_bits(key, bit_width, shape):
  if bit_width not in (8, 16, 32):
    raise ValueError(f'{bit_width}-bit draws: this PRNG gives 8, 16 or 32')
  bits = hash32(_counters(math.prod(shape)), _key(key, _BITS))
  if bit_width < 32:  # the high bits, as the best mixed
    bits = (bits >> (32 - bit_width)).astype(f'uint{bit_width}')
  return bits.reshape(shape)


IMPL = jax_random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits,
    fold_in=_fold_in, name='hash32', tag='h32')


def key_from(key) -> jax.Array:
  """A key of this PRNG with the data of `key` (uint32[2], e.g. threefry's)."""
  return jax.random.wrap_key_data(jax.random.key_data(key), impl=IMPL)
