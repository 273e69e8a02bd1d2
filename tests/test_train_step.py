"""The compiled train and eval steps on a tiny configuration."""

import copy
import functools

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jingle_jax import losses
from jingle_jax import train_step

STEP_METRICS = {
    'loss', 'recon_input', 'recon_target', 'complementarity', 'overlap',
    'coverage', 'temporal', 'mask_reg', 'balance', 'balance_weighted',
    'input_mask_mean', 'target_mask_mean', 'rms_scale', 'grad_norm',
    'learning_rate', 'g_adv', 'd_loss', 'd_real_acc', 'd_fake_acc',
    'disc_grad_norm', 'skipped'}


def make_batch(config, seed=0):
  input_rng, target_rng = jax.random.split(jax.random.key(seed))
  shape = (config.per_device_batch_size, config.num_frames,
           config.model.latent_dim)
  return {'input': jax.random.normal(input_rng, shape),
          'target': jax.random.normal(target_rng, shape)}


def init_state(config):
  return jax.jit(functools.partial(train_step.create_train_state, config))(
      jax.random.key(config.seed))


def flat(tree):
  """{path: numpy leaf}; paths read like "params/creative_agent/..."."""
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path):
              np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_every_parameter_receives_a_gradient(tiny_config):
  state = init_state(tiny_config)
  grads, disc_grads, _, _ = jax.jit(
      functools.partial(train_step.gradients, config=tiny_config))(
          state, make_batch(tiny_config), jax.random.key(1))
  for name, grad in flat(grads).items():
    if name.startswith('creative_agent/discriminator/'):
      # The style discriminator is in no loss of the recipe (as in PyTorch).
      assert not np.any(grad), name
    else:
      assert np.any(grad != 0), name
  for name, grad in flat(disc_grads).items():
    assert np.any(grad != 0), name


def test_gradients_are_those_of_the_two_losses(tiny_config):
  """The shared forwards give the gradients of each loss on its own.

  The generator's loss differentiated end to end through the discriminator
  (held fixed), and D's loss with the generator output held constant, with
  the rngs train_step.gradients hands out.
  """
  state = init_state(tiny_config)
  batch = make_batch(tiny_config)
  rng = jax.random.key(3)
  gen_rng, disc_rng = jax.random.split(rng)
  real_rng, fake_rng = jax.random.split(disc_rng)

  def generator_loss(params):
    out, _ = train_step.generator_forward(params, state.batch_stats, batch,
                                          gen_rng, tiny_config)
    fake_logits = train_step.discriminator_logits(
        state.disc_params, out.output, fake_rng, tiny_config)
    return train_step.output_loss(out, fake_logits, batch, tiny_config)[0]

  def discriminator_loss(disc_params):
    out, _ = train_step.generator_forward(state.params, state.batch_stats,
                                          batch, gen_rng, tiny_config)
    logits = [train_step.discriminator_logits(disc_params, samples, key,
                                              tiny_config)
              for samples, key in ((train_step.real_samples(batch), real_rng),
                                   (out.output, fake_rng))]
    return losses.discriminator_loss(*logits)[0]

  grads, disc_grads, _, metrics = jax.jit(
      functools.partial(train_step.gradients, config=tiny_config))(
          state, batch, rng)
  expected = jax.jit(jax.value_and_grad(generator_loss))(state.params)
  expected_disc = jax.jit(jax.value_and_grad(discriminator_loss))(
      state.disc_params)
  np.testing.assert_allclose(metrics['loss'], expected[0], rtol=1e-6)
  np.testing.assert_allclose(metrics['d_loss'], expected_disc[0], rtol=1e-6)
  for actual, wanted in ((grads, expected[1]), (disc_grads, expected_disc[1])):
    for name, value in flat(wanted).items():
      np.testing.assert_allclose(flat(actual)[name], value, rtol=1e-4,
                                 atol=1e-7, err_msg=name)


@pytest.fixture(scope='module')
def compiled(tiny_config):
  """Jitted init, train step (donating its state) and eval step, and a batch.

  Shared so that each compiles once; the step donates its state, so every
  test starts from a fresh init().
  """
  init = jax.jit(functools.partial(train_step.create_train_state, tiny_config))
  return (lambda: init(jax.random.key(0)),
          train_step.make_train_step(tiny_config),
          train_step.make_eval_step(tiny_config), make_batch(tiny_config))


def test_train_step_updates_everything_and_reports_metrics(compiled):
  init, step, evaluate, batch = compiled
  state = init()
  before = flat(state)
  state, metrics = step(state, batch, jax.random.key(0))
  assert set(metrics) == STEP_METRICS
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics['skipped']) == 0.0
  assert 0.0 < float(metrics['complementarity']) < 1.0
  after = flat(state)
  assert after['step'] == 1
  for name in before:
    if name == 'step':
      continue
    unchanged = np.array_equal(before[name], after[name])
    # The style discriminator has no gradient and no weight decay; v starts
    # as normalize(K u), which is what the first power iteration computes.
    frozen = ('/creative_agent/discriminator/' in f'/{name}' or
              name.endswith('output_proj/v'))
    assert unchanged == frozen, name
  eval_metrics = [evaluate(state, batch) for _ in range(2)]
  assert set(eval_metrics[0]) == STEP_METRICS - {
      'grad_norm', 'learning_rate', 'disc_grad_norm', 'skipped'}
  assert jax.tree.all(jax.tree.map(np.array_equal, *eval_metrics))


def test_non_finite_step_is_skipped(compiled):
  init, step, _, batch = compiled
  state = init()
  before = flat(state)
  bad = dict(batch, input=batch['input'].at[0, 0, 0].set(jnp.nan))
  state, metrics = step(state, bad, jax.random.key(0))
  assert float(metrics['skipped']) == 1.0
  after = flat(state)
  for name in before:
    np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_overfitting_two_pairs_learns_complementary_balanced_masks(
    tiny_config):
  config = ml_collections.ConfigDict(copy.deepcopy(tiny_config))
  config.loss.gan_weight = 0.0  # no discriminator: fast and steady
  config.optim.learning_rate = 1e-3
  state = init_state(config)
  # Start from masks that keep ~88% of both clips: low complementarity and a
  # large balance loss, both of which training has to fix.
  params = flax.traverse_util.flatten_dict(state.params)
  for name in params:
    if name[-3:] in (('input_mask_generator', 'layers_2', 'bias'),
                     ('target_mask_generator', 'layers_2', 'bias')):
      params[name] = params[name] + 2.0
  state = state.replace(params=flax.traverse_util.unflatten_dict(params))
  step = train_step.make_train_step(config)
  evaluate = train_step.make_eval_step(config)
  batch = make_batch(config)
  start = evaluate(state, batch)
  for i in range(200):
    state, _ = step(state, batch, jax.random.key(i))
  end = evaluate(state, batch)
  assert float(start['complementarity']) < 0.3
  assert float(end['complementarity']) > 0.8
  assert float(start['balance']) > 0.2
  assert float(end['balance']) < 0.02
  assert float(end['loss']) < 0.5 * float(start['loss'])


def test_compute_dtype_names_the_setting():
  assert train_step.compute_dtype('bfloat16') == jnp.bfloat16
  with pytest.raises(ValueError, match='model.compute_dtype'):
    train_step.compute_dtype('float64')
