"""Layer normalisation against PyTorch's; multi-head attention: rematerialised
dropout weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.models import MultiheadAttention
from jingle_jax.models.layers import layer_norm


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


def test_layer_norm_and_its_gradients_are_pytorchs():
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(3, 50, 96)) * 4 + 2).astype(np.float32)
  scale = rng.normal(size=96).astype(np.float32)
  bias = rng.normal(size=96).astype(np.float32)
  weights = rng.normal(size=x.shape).astype(np.float32)

  loss = lambda x, s, b: jnp.sum(layer_norm(x, s, b, 1e-5) * weights)
  value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(x, scale, bias)

  inputs = [torch.tensor(a, dtype=torch.float64, requires_grad=True)
            for a in (x, scale, bias)]
  torch_value = (torch.nn.functional.layer_norm(
      inputs[0], (96,), inputs[1], inputs[2], 1e-5) *
                 torch.tensor(weights, dtype=torch.float64)).sum()
  torch_value.backward()
  np.testing.assert_allclose(value, torch_value.item(), rtol=1e-5)
  for grad, tensor in zip(grads, inputs):
    np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=1e-4,
                               atol=1e-4 * np.abs(tensor.grad.numpy()).max())


def test_layer_norm_gradient_takes_the_inputs_dtype():
  x = jax.random.normal(jax.random.key(0), (4, 8), jnp.bfloat16)
  grad = jax.grad(lambda x: jnp.sum(
      layer_norm(x, jnp.ones(8), jnp.zeros(8), 1e-5) ** 2))(x)
  assert layer_norm(x, jnp.ones(8), jnp.zeros(8), 1e-5).dtype == jnp.float32
  assert grad.dtype == jnp.bfloat16
