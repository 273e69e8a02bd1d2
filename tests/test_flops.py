"""The analytic FLOP count: matmuls, convolutions, loops, remat, kernels."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jingle_jax.models import attention
from jingle_jax.models import CascadeTransformer
from jingle_jax.models import ModelConfig
from jingle_jax.models.cascade import LAYER_POLICY
from jingle_jax.perf import flops


def flops_of(function, *args) -> int:
  return flops.count(jax.make_jaxpr(function)(*args))


def test_matmul_and_convolution():
  a, b = jnp.zeros((3, 5, 7)), jnp.zeros((7, 11))
  assert flops_of(jnp.matmul, a, b) == 2 * 3 * 5 * 7 * 11
  conv = nn.Conv(16, (3,), strides=(2,))
  x = jnp.zeros((2, 50, 8))
  params = conv.init(jax.random.key(0), x)
  forward = 2 * (2 * 25 * 16) * (3 * 8)  # outputs x kernel taps x inputs
  assert flops_of(conv.apply, params, x) == forward
  # The weight gradient costs a forward pass, and so does the input's.
  grad = jax.grad(lambda p, x: jnp.sum(conv.apply(p, x)), argnums=(0, 1))
  assert flops_of(grad, params, x) == 3 * forward


def test_scans_repeat_and_remat_recomputes():
  weights = jnp.zeros((4, 6, 6))  # a scan over 4 layers

  def network(weights, x):
    return jnp.sum(jax.lax.scan(lambda x, w: (jnp.tanh(x @ w), None), x,
                                weights)[0])

  x = jnp.zeros((10, 6))
  layer = 2 * 10 * 6 * 6
  assert flops_of(network, weights, x) == 4 * layer
  grad = jax.grad(network)
  assert flops_of(grad, weights, x) == 3 * 4 * layer
  recomputed = jax.grad(jax.checkpoint(network))
  assert flops_of(recomputed, weights, x) == 4 * 4 * layer


def test_attention_kernels_and_what_remat_keeps():
  q = jnp.zeros((2, 40, 3, 16))
  matmul = 2 * 2 * 3 * 40 * 40 * 16  # one [T, S] x h product, all heads
  delta = 2 * q.size  # the backward pass's d_out . out
  seed = jnp.zeros((2,), jnp.uint32)

  def loss(q, implementation):
    return jnp.sum(attention.attend(q, q, q, 0.1, seed, implementation))

  assert flops_of(lambda q: loss(q, 'fused'), q) == 2 * matmul
  # The reference: QK and PV forward, four products backward. The kernels:
  # the forward, then dk/dv (QK, dO V^T, P^T dO, dS^T Q) and dq (QK,
  # dO V^T, dS K).
  grad = lambda implementation: jax.grad(lambda q: loss(q, implementation))
  assert flops_of(grad('xla'), q) == 6 * matmul
  assert flops_of(grad('fused'), q) == 9 * matmul + delta
  # Recomputed forward kernels count, unless the policy keeps their outputs.
  every = jax.grad(jax.checkpoint(lambda q: loss(q, 'fused')))
  assert flops_of(every, q) == 11 * matmul + delta
  kept = jax.grad(jax.checkpoint(lambda q: loss(q, 'fused'),
                                 policy=LAYER_POLICY))
  assert flops_of(kept, q) == 9 * matmul + delta
  # The reference, rematerialised in a remat 'layers' layer, before the out
  # projection (whose weight gradient needs its output): the layer's policy
  # keeps that output, so only the reference's own backward pass recomputes
  # QK and PV.
  w = jnp.zeros((3 * 16, 8))
  projection = 2 * 2 * 40 * 3 * 16 * 8

  def layer(q, w):
    out = attention.attend(q, q, q, 0.1, seed, 'xla', remat=True)
    return jnp.sum(out.reshape(2, 40, -1) @ w)

  in_layer = jax.grad(jax.checkpoint(layer, policy=LAYER_POLICY), (0, 1))
  assert flops_of(in_layer, q, w) == 8 * matmul + 3 * projection


def test_cascade_forward_is_the_closed_form():
  """Per layer 24 d^2 per frame of projections, 4 T d of attention; per
  stage a projection to D and the spectral norm's sigma = v K u."""
  config = ModelConfig(latent_dim=16, num_stages=3, num_layers=2,
                       num_heads=2, use_creative_agent=False, remat='none')
  model = CascadeTransformer(config)
  batch, frames, dim = 2, 24, 16
  x = jnp.zeros((batch, frames, dim))
  variables = model.init(jax.random.key(0), x, x, train=False)
  counted = flops_of(
      lambda v, x: model.apply(v, x, x, train=False).output, variables, x)
  expected = 0
  for stage in range(3):
    width = (2 if stage == 0 else 3) * dim
    layer = (2 * batch * frames * 12 * width**2 +  # q, k, v, out, 4d, back
             4 * batch * frames * frames * width)  # QK, PV over all heads
    expected += (2 * layer + 2 * batch * frames * width * dim +
                 2 * width * dim + 2 * dim)
  assert counted == expected
