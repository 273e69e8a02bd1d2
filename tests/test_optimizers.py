"""AdamW over one flat array: the per-parameter AdamW's steps, moments in
and out as trees."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jingle_jax.perf import profiling
from jingle_jax.training import optimizers

CLIP = 0.5


def params_and_frozen():
  rng = np.random.default_rng(0)
  params = {'cascade_stages_0': {'kernel': rng.normal(size=(3, 4)),
                                 'bias': rng.normal(size=4)},
            'creative_agent': {
                'discriminator': {'kernel': rng.normal(size=(2, 2))},
                'mask_generator': {'kernel': rng.normal(size=(4, 2))}}}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  frozen = jax.tree.map(lambda _: False, params)
  frozen['creative_agent']['discriminator']['kernel'] = True
  return params, frozen


def per_leaf_adamw(weight_decay, frozen):
  """What the optimiser was before it ran flat."""
  return optax.chain(optax.clip_by_global_norm(CLIP), optax.adamw(
      1e-2, b1=0.9, b2=0.999, weight_decay=weight_decay,
      mask=jax.tree.map(lambda f: not f, frozen)))


def test_steps_match_the_per_parameter_adamw():
  params, frozen = params_and_frozen()
  flat = optimizers.adamw(1e-2, b1=0.9, b2=0.999, weight_decay=0.1,
                          clip_norm=CLIP)
  reference = per_leaf_adamw(0.1, frozen)
  rng = np.random.default_rng(1)
  flat_params, flat_state = params, flat.init(params)
  ref_params, ref_state = params, reference.init(params)
  for _ in range(3):
    # The frozen style discriminator has no gradient (zero, as here).
    grads = jax.tree.map(
        lambda p, f: jnp.zeros_like(p) if f else jnp.asarray(
            rng.normal(size=p.shape), jnp.float32), params, frozen)
    updates, flat_state = flat.update(grads, flat_state, flat_params)
    flat_params = optax.apply_updates(flat_params, updates)
    updates, ref_state = reference.update(grads, ref_state, ref_params)
    ref_params = optax.apply_updates(ref_params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               flat_params, ref_params)
  np.testing.assert_array_equal(
      flat_params['creative_agent']['discriminator']['kernel'],
      params['creative_agent']['discriminator']['kernel'])
  count, mu, nu = optimizers.moments(flat_state, params)
  assert int(count) == 3
  adam = ref_state[1][0]
  for moment, wanted in ((mu, adam.mu), (nu, adam.nu)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
                 moment, wanted)
  # The flat state holds one array per moment, and none for the frozen.
  frozen_size = params['creative_agent']['discriminator']['kernel'].size
  assert optax.tree.get(flat_state, 'mu').shape == (
      sum(x.size for x in jax.tree.leaves(params)) - frozen_size,)


def test_moments_in_and_out_as_trees():
  params, frozen = params_and_frozen()
  tx = optimizers.adamw(1e-2, b1=0.9, b2=0.999, weight_decay=0.0,
                        clip_norm=CLIP)
  mu = jax.tree.map(lambda p: p + 1.0, params)
  nu = jax.tree.map(lambda p: p * p, params)
  count, mu_out, nu_out = optimizers.moments(
      optimizers.with_moments(tx, params, 7, mu, nu), params)
  assert int(count) == 7
  for out, given in ((mu_out, mu), (nu_out, nu)):
    jax.tree.map(lambda o, g, f: np.testing.assert_array_equal(
        o, np.zeros_like(g) if f else g), out, given, frozen)
  # A state of the per-leaf layout (older checkpoints) converts likewise.
  older = per_leaf_adamw(0.0, frozen).init(params)
  assert jax.tree.structure(older) == jax.tree.structure(
      optimizers.per_leaf_state(params))
  older = optax.tree.set(older, count=jnp.asarray(4, jnp.int32), mu=mu,
                         nu=nu)
  count, mu_out, _ = optimizers.moments(
      optimizers.from_per_leaf(tx, params, older), params)
  assert int(count) == 4
  np.testing.assert_array_equal(mu_out['cascade_stages_0']['bias'],
                                mu['cascade_stages_0']['bias'])


def test_no_parameters_no_state():
  """The GAN off: its optimiser has nothing to update."""
  tx = optimizers.adamw(1e-2, b1=0.5, b2=0.999, weight_decay=0.0,
                        clip_norm=1.0)
  state = tx.init({})
  assert tx.update({}, state, {}) == ({}, state)
  assert optimizers.flat_norm({}, {}) == 0.0


def test_the_update_compiles_to_as_many_fusions_for_many_parameters():
  """The moments' update is a few kernels over one array, not some per
  parameter: 40 parameters compile to no more fusions than 4."""
  def fusions(count):
    params = {f'p{i}': jnp.ones((3, 5)) for i in range(count)}
    tx = optimizers.adamw(1e-2, b1=0.9, b2=0.999, weight_decay=0.1,
                          clip_norm=1.0)
    moments_update = jax.jit(lambda g, s, p: tx.update(g, s, p)[1])
    return profiling.count_fusions(moments_update.lower(
        params, tx.init(params), params).compile())

  flat = fusions(40)
  assert flat <= fusions(4)
  per_leaf = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
  params = {f'p{i}': jnp.ones((3, 5)) for i in range(40)}
  before = jax.jit(lambda g, s, p: per_leaf.update(g, s, p)[1]).lower(
      params, per_leaf.init(params), params).compile()
  assert profiling.count_fusions(before) > 10 * flat
