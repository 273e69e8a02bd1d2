"""Dropout and attention building blocks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.models import layers
from jingle_jax.models import MultiheadAttention

SEED = jnp.array([7, 11], jnp.uint32)


def qkv(target_frames, source_frames, heads=3, head_dim=4, batch=2):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (batch, target_frames, heads, head_dim)),
          jax.random.normal(keys[1], (batch, source_frames, heads, head_dim)),
          jax.random.normal(keys[2], (batch, source_frames, heads, head_dim)))


def softmax_weights(q, k):
  logits = jnp.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(q.shape[-1])
  return jax.nn.softmax(logits, axis=-1)


def test_attention_is_softmax_attention():
  q, k, v = qkv(7, 5)
  expected = jax.nn.dot_product_attention(q, k, v)
  np.testing.assert_allclose(layers.attention(q, k, v), expected, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(layers.fused_attention(q, k, v), expected,
                             rtol=1e-5, atol=1e-6)
  # Large logits: the per-row shift keeps the exponentials finite.
  np.testing.assert_allclose(layers.attention(100 * q, k, v),
                             jax.nn.dot_product_attention(100 * q, k, v),
                             rtol=1e-4, atol=1e-5)


def test_attention_dropout_acts_on_the_normalised_weights():
  q, k, v = qkv(6, 9)
  dropped = layers.dropout(softmax_weights(q, k), 0.3, SEED)
  expected = jnp.einsum('bnts,bsnh->btnh', dropped, v)
  np.testing.assert_allclose(layers.attention(q, k, v, 0.3, SEED), expected,
                             rtol=1e-5, atol=1e-6)
  gradient = jax.grad(lambda q: jnp.sum(layers.attention(q, k, v, 0.3, SEED)))
  expected_gradient = jax.grad(lambda q: jnp.sum(jnp.einsum(
      'bnts,bsnh->btnh', layers.dropout(softmax_weights(q, k), 0.3, SEED), v)))
  np.testing.assert_allclose(gradient(q), expected_gradient(q), rtol=1e-4,
                             atol=1e-6)


def test_dropout_keeps_the_expected_share_and_scale():
  x = jnp.ones((256, 512))
  y = layers.dropout(x, 0.25, SEED)
  kept = np.asarray(y != 0)
  assert abs(kept.mean() - 0.75) < 0.005
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-6)
  other = np.asarray(layers.dropout(x, 0.25, SEED + 1) != 0)
  assert abs((kept & other).mean() - 0.75**2) < 0.005  # independent masks
  np.testing.assert_array_equal(layers.dropout(x, 0.25, SEED) != 0, kept)


class Stack(nn.Module):
  """Three self-attention layers in a row, in training mode."""

  remat: bool

  @nn.compact
  def __call__(self, x):
    for _ in range(3):
      x = x + MultiheadAttention(4, 0.1, remat=self.remat)(
          x, deterministic=False)
    return x


def test_rematerialised_attention_same_gradients_no_stored_weights():
  x = jax.random.normal(jax.random.key(1), (2, 64, 16))
  params = Stack(remat=False).init(jax.random.key(2), x)

  def loss(params, remat):
    return jnp.sum(Stack(remat).apply(
        params, x, rngs={'dropout': jax.random.key(3)}) ** 2)

  def stored_shapes(remat):  # what the backward pass keeps from the forward
    residuals = jax.eval_shape(
        lambda p: jax.vjp(lambda p: loss(p, remat), p)[1], params)
    return [leaf.shape for leaf in jax.tree.leaves(residuals)]

  weights_shape = (2, 4, 64, 64)  # [B, heads, T, S]
  assert stored_shapes(remat=False).count(weights_shape) >= 3
  assert weights_shape not in stored_shapes(remat=True)
  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (value, grads), (remat_value, remat_grads) = grad(params, False), grad(
      params, True)
  np.testing.assert_allclose(remat_value, value, rtol=1e-6)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      remat_grads, grads)
