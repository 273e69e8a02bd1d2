"""Attention with dropout: the XLA reference and the fused Pallas kernels.

Off GPU the kernels run in Pallas's interpreter, so these tests check what
they compute; that they lower for CUDA is checked by exporting them.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jingle_jax.models import attention
from jingle_jax.models import dropout

SEED = jnp.array([7, 11], jnp.uint32)


def qkv(queries, keys, heads=3, head_dim=4, batch=2, dtype=jnp.float32):
  rngs = jax.random.split(jax.random.key(0), 3)
  return tuple(jax.random.normal(rng, (batch, length, heads, head_dim), dtype)
               for rng, length in zip(rngs, (queries, keys, keys)))


def softmax_weights(q, k):
  logits = jnp.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(q.shape[-1])
  return jax.nn.softmax(logits, axis=-1)


def relative_error(actual, expected):
  return float(jnp.max(jnp.abs(actual - expected)) /
               jnp.max(jnp.abs(expected)))


def test_reference_is_softmax_attention():
  q, k, v = qkv(7, 5)
  expected = jax.nn.dot_product_attention(q, k, v)
  np.testing.assert_allclose(attention.reference(q, k, v), expected,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(attention.attend(q, k, v, 0.0, None, 'xla'),
                             expected, rtol=1e-5, atol=1e-6)
  # Large logits: the per-row shift keeps the exponentials finite.
  np.testing.assert_allclose(attention.reference(100 * q, k, v),
                             jax.nn.dot_product_attention(100 * q, k, v),
                             rtol=1e-4, atol=1e-5)


def test_reference_dropout_acts_on_the_normalised_weights():
  q, k, v = qkv(6, 9)
  dropped = dropout.dropout(softmax_weights(q, k), 0.3, SEED)
  expected = jnp.einsum('bnts,bsnh->btnh', dropped, v)
  np.testing.assert_allclose(attention.reference(q, k, v, 0.3, SEED),
                             expected, rtol=1e-5, atol=1e-6)
  gradient = jax.grad(lambda q: jnp.sum(attention.reference(q, k, v, 0.3,
                                                            SEED)))
  expected_gradient = jax.grad(lambda q: jnp.sum(jnp.einsum(
      'bnts,bsnh->btnh', dropout.dropout(softmax_weights(q, k), 0.3, SEED),
      v)))
  np.testing.assert_allclose(gradient(q), expected_gradient(q), rtol=1e-4,
                             atol=1e-6)


def test_kernel_drops_exactly_the_reference_weights():
  """Every (query, key) of 1200 frames, read back through the kernel.

  With q = 0 every weight is 1/T; batch row b's v picks keys
  [48 b, 48 b + 48) one per channel, so its output is the keep mask of
  those keys divided by T x keep.
  """
  frames, heads, head_dim, rate = 1200, 2, 48, 0.1
  batch = frames // head_dim
  q = jnp.zeros((batch, frames, heads, head_dim))
  v = np.zeros((batch, frames, heads, head_dim), np.float32)
  for b in range(batch):
    v[b, b * head_dim + np.arange(head_dim), :, np.arange(head_dim)] = 1.0
  out = jax.jit(lambda q, v: attention.fused(q, q, v, rate, SEED))(
      q, jnp.asarray(v))
  kept = np.asarray(out) * frames * dropout.keep_probability(rate) > 0.5
  expected = np.asarray(dropout.dropout(
      jnp.ones((batch, heads, frames, frames)), rate, SEED) != 0)
  for b in range(batch):  # [T, heads, h] -> [heads, T, h]
    np.testing.assert_array_equal(
        kept[b].transpose(1, 0, 2),
        expected[b, :, :, b * head_dim:(b + 1) * head_dim], err_msg=f'{b}')
  assert abs(kept.mean() - dropout.keep_probability(rate)) < 0.002


@pytest.mark.parametrize('queries, keys, head_dim, rate', [
    (1200, 1200, 32, 0.1),  # the seed's stage 0: 256 channels, 8 heads
    (1200, 1200, 48, 0.1),  # later stages: 384 channels
    (100, 37, 64, 0.3),  # cross-attention of other lengths; no whole block
    (20, 20, 4, 0.0),  # no dropout; a head dim padded to 16
])
def test_kernel_matches_the_reference(queries, keys, head_dim, rate):
  q, k, v = qkv(queries, keys, heads=2, head_dim=head_dim, batch=1)
  cotangent = jax.random.normal(jax.random.key(5), q.shape[:3] + (v.shape[3],))

  def loss(implementation):
    return lambda q, k, v: jnp.sum(cotangent * attention.attend(
        q, k, v, rate, SEED, implementation))

  out = jax.jit(attention.fused, static_argnums=3)(q, k, v, rate, SEED)
  expected = attention.reference(q, k, v, rate, SEED)
  assert relative_error(out, expected) <= 1e-5
  grads = jax.jit(jax.grad(loss('fused'), argnums=(0, 1, 2)))(q, k, v)
  expected = jax.jit(jax.grad(loss('xla'), argnums=(0, 1, 2)))(q, k, v)
  for name, grad, wanted in zip('qkv', grads, expected):
    assert relative_error(grad, wanted) <= 1e-3, name


def test_kernel_in_bfloat16_matches_the_reference():
  q, k, v = qkv(200, 200, heads=2, head_dim=48, dtype=jnp.bfloat16)
  out = attention.fused(q, k, v, 0.1, SEED)
  assert out.dtype == jnp.bfloat16
  expected = attention.reference(q, k, v, 0.1, SEED)
  assert relative_error(out.astype(jnp.float32),
                        expected.astype(jnp.float32)) < 2e-2


def test_kernels_lower_for_cuda():
  """Forward and backward become Triton calls in a CUDA export (no GPU)."""
  q = jax.ShapeDtypeStruct((16, 1200, 8, 48), jnp.bfloat16)

  def loss(q, k, v, seed):
    return jnp.sum(attention.fused(q, k, v, 0.1, seed, interpret=False)
                   .astype(jnp.float32))

  exported = jax.export.export(
      jax.jit(jax.grad(loss, argnums=(0, 1, 2))), platforms=('cuda',),
      disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(
          '__gpu$xla.gpu.triton')])(
              q, q, q, jax.ShapeDtypeStruct((2,), jnp.uint32))
  module = exported.mlir_module()
  assert module.count('@__gpu$xla.gpu.triton(') == 3  # forward, dk/dv, dq
  for name in ('attention_forward', 'attention_key_grads',
               'attention_query_grads'):
    assert name in module


def test_unknown_implementation_is_refused():
  q, k, v = qkv(4, 4)
  with pytest.raises(ValueError, match="'cudnn' is not one of"):
    attention.attend(q, k, v, 0.0, None, 'cudnn')


def test_kernel_on_four_devices_drops_the_whole_batchs_weights():
  """Under a mesh each device runs the kernels on its rows, with the masks
  of the global batch: the same values and gradients as the reference."""
  script = textwrap.dedent('''
      import jax, jax.numpy as jnp
      from jax.sharding import NamedSharding, PartitionSpec
      from jingle_jax.core import parallel
      from jingle_jax.models import attention
      mesh = parallel.make_mesh()
      rngs = jax.random.split(jax.random.key(0), 4)
      q, k, v, w = (jax.random.normal(rng, (8, 70, 2, 48)) for rng in rngs)
      q, k, v = jax.device_put((q, k, v), parallel.data_sharding(mesh))
      seed = jnp.array([7, 11], jnp.uint32)
      def loss(implementation):
        return lambda q, k, v: jnp.sum(w * attention.attend(
            q, k, v, 0.1, seed, implementation))
      with jax.set_mesh(mesh):
        fused = jax.jit(jax.value_and_grad(loss('fused'), argnums=(0, 1, 2)))
        lowered = fused.lower(q, k, v).as_text()
        (value, grads) = fused(q, k, v)
      expected, expected_grads = jax.value_and_grad(
          loss('xla'), argnums=(0, 1, 2))(q, k, v)
      assert abs(value - expected) <= 1e-5 * abs(expected), (value, expected)
      for grad, wanted in zip(grads, expected_grads):
        assert grad.sharding.spec == PartitionSpec('data')
        error = jnp.max(jnp.abs(grad - wanted)) / jnp.max(jnp.abs(wanted))
        assert error <= 1e-3, error
      assert 'all-gather' not in lowered  # each device keeps its rows
  ''')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  subprocess.run([sys.executable, '-c', script], env=env, check=True)
