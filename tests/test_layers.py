"""Multi-head attention: rematerialised dropout weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.models import MultiheadAttention


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
