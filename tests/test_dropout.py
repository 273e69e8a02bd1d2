"""Dropout masks hashed from (seed, element index), four draws per hash."""

import jax.numpy as jnp
import numpy as np
import pytest

from jingle_jax.models import dropout

SEED = jnp.array([7, 11], jnp.uint32)


def numpy_keep_mask(seed, shape, rate):
  """The documented function, written again in numpy: element [..., i] keeps
  when byte i % 4 of lowbias32(lowbias32(c + seed0) ^ seed1), c = row x
  ceil(L / 4) + i // 4, is at least round(256 rate)."""
  def mix(x):
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x21F0AAAD)) & np.uint64(0xFFFFFFFF)
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x735A2D97)) & np.uint64(0xFFFFFFFF)
    return x ^ (x >> np.uint64(15))

  rows, length = int(np.prod(shape[:-1])), shape[-1]
  groups = -(-length // 4)
  row, column = np.meshgrid(np.arange(rows, dtype=np.uint64),
                            np.arange(length, dtype=np.uint64), indexing='ij')
  counter = (row * np.uint64(groups) + column // np.uint64(4)) & np.uint64(
      0xFFFFFFFF)
  bits = mix((mix((counter + np.uint64(seed[0])) & np.uint64(0xFFFFFFFF)) ^
              np.uint64(seed[1])))
  draws = (bits >> (np.uint64(8) * (column % np.uint64(4)))) & np.uint64(255)
  return (draws >= round(256 * rate)).reshape(shape)


def test_mask_is_the_documented_function_of_the_element_index():
  shape = (2, 3, 10)  # rows of 10: the last hash of a row serves 2 elements
  kept = np.asarray(dropout.dropout(jnp.ones(shape), 0.3, SEED) != 0)
  np.testing.assert_array_equal(kept, numpy_keep_mask((7, 11), shape, 0.3))


def test_dropout_keeps_the_expected_share_and_scale():
  x = jnp.ones((256, 512))
  y = dropout.dropout(x, 0.25, SEED)
  kept = np.asarray(y != 0)
  assert abs(kept.mean() - 0.75) < 0.005
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-6)
  other = np.asarray(dropout.dropout(x, 0.25, SEED + 1) != 0)
  assert abs((kept & other).mean() - 0.75**2) < 0.005  # independent masks
  np.testing.assert_array_equal(dropout.dropout(x, 0.25, SEED) != 0, kept)


def test_neighbours_sharing_a_hash_are_independent():
  kept = np.asarray(dropout.dropout(jnp.ones((512, 1024)), 0.5, SEED) != 0)
  for shift in (1, 2, 3, 4):  # bytes of one hash, and the next hash's
    both = (kept[:, :-shift] & kept[:, shift:]).mean()
    assert abs(both - 0.25) < 0.004, shift
  assert abs((kept[:-1] & kept[1:]).mean() - 0.25) < 0.004  # next row


@pytest.mark.parametrize('rate, threshold', [
    (0.0, 0), (0.1, 26), (0.3, 77), (0.5, 128), (1e-4, 1), (0.9999, 255)])
def test_rates_are_realised_in_steps_of_1_256(rate, threshold):
  assert dropout.drop_threshold(rate) == threshold
  assert dropout.keep_probability(rate) == 1 - threshold / 256
  y = dropout.dropout(jnp.ones((512, 512)), rate, SEED)
  assert abs(float(jnp.mean(y)) - 1.0) < 0.05  # unbiased: kept / keep prob.


@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_rates_outside_0_1_are_refused(rate):
  with pytest.raises(ValueError, match=f'dropout rate {rate}'):
    dropout.drop_threshold(rate)
