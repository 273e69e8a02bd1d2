"""Tests for jingle_jax.core.xla_options."""

import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.core import xla_options


def _activations(x):
  # The kinds of elementwise work the model's kernels do.
  return (jax.nn.gelu(x, approximate=False) + jnp.tanh(x) * jax.nn.sigmoid(x)
          + jnp.log1p(jnp.exp(-jnp.abs(x))) + jnp.sqrt(x * x + 1.0))


def test_programs_compiled_with_the_options_compute_what_xla_defaults_do():
  x = jnp.asarray(np.random.default_rng(0).normal(0.0, 3.0, 4096),
                  jnp.float32)
  np.testing.assert_allclose(xla_options.jit(_activations)(x),
                             jax.jit(_activations)(x), rtol=2e-6, atol=2e-6)


def test_the_cpu_gets_its_options_and_other_backends_none():
  assert xla_options.options('cpu') == xla_options.CPU_OPTIONS
  assert xla_options.options('gpu') == {}


def test_an_xla_without_the_options_gets_none(monkeypatch):
  monkeypatch.setattr(xla_options, 'CPU_OPTIONS',
                      {'xla_cpu_option_no_xla_has': True})
  xla_options.options.cache_clear()
  try:
    assert xla_options.options('cpu') == {}
    assert float(xla_options.jit(lambda x: x + 1)(1.0)) == 2.0
  finally:
    xla_options.options.cache_clear()


def test_jit_passes_its_arguments_on():
  double = xla_options.jit(lambda x, n: x * n, static_argnums=1)
  assert float(double(1.5, 2)) == 3.0
