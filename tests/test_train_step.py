"""The compiled train and eval steps on a tiny configuration."""

import dataclasses
import functools

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jingle_jax.config import run_config
from jingle_jax.data import latent_space
from jingle_jax.data import latents
from jingle_jax.training import losses
from jingle_jax.training import optimizers
from jingle_jax.training import train_step
import train_config

STEP_METRICS = {
    'loss', 'recon_input', 'recon_target', 'complementarity', 'overlap',
    'coverage', 'temporal', 'mask_reg', 'balance', 'balance_weighted',
    'input_mask_mean', 'target_mask_mean', 'rms_scale', 'grad_norm',
    'learning_rate', 'g_adv', 'd_loss', 'd_real_acc', 'd_fake_acc',
    'disc_grad_norm', 'skipped', 'data_fault'}


def make_batch(config, seed=0):
  input_rng, target_rng = jax.random.split(jax.random.key(seed))
  shape = (config.per_device_batch_size, config.num_frames,
           config.model.latent_dim)
  return {'input': jax.random.normal(input_rng, shape),
          'target': jax.random.normal(target_rng, shape)}


def jitted_steps(config):
  """(train step donating its state, eval step), jitted for one device, on
  raw latents (only non-finite values are faults)."""
  space = latent_space.identity(config.model.latent_dim)
  train = jax.jit(functools.partial(train_step.train_step, config=config),
                  donate_argnums=0)
  evaluate = jax.jit(functools.partial(train_step.eval_step, config=config))
  return (lambda state, batch, rng: train(state, batch, rng, space),
          lambda state, batch: evaluate(state, batch, space))


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
  grads, _, (disc_params, _), _ = jax.jit(
      functools.partial(train_step.gradients, config=tiny_config))(
          state, make_batch(tiny_config), jax.random.key(1))
  for name, grad in flat(grads).items():
    if name.startswith('creative_agent/discriminator/'):
      # The style discriminator is in no loss of the recipe (as in PyTorch).
      assert not np.any(grad), name
    else:
      assert np.any(grad != 0), name
  before = flat(state.disc_params)
  for name, value in flat(disc_params).items():
    assert not np.array_equal(value, before[name]), name


def test_generator_adversarial_gradient_goes_through_the_updated_discriminator(
    tiny_config):
  """DESIGN.md 4.4: D's AdamW step first, then G's loss through D' (fresh rng).

  The expectation is built by hand: D's loss on the real and the (constant)
  fake samples, one step of its optimiser, then the generator's loss
  differentiated end to end through the updated discriminator.
  """
  state = init_state(tiny_config)
  batch = make_batch(tiny_config)
  rng = jax.random.key(3)
  gen_rng, disc_rng, adversarial_rng = jax.random.split(rng, 3)
  _, disc_tx = optimizers.make_optimizers(tiny_config.optim)

  def forward(params):
    return train_step.generator_forward(params, state.batch_stats, batch,
                                        gen_rng, tiny_config)[0]

  def discriminator_loss(disc_params, fake):
    real = jnp.roll(batch['target'], 1, axis=0)  # the pair before's target
    real_logits, fake_logits = jnp.split(train_step.discriminator_logits(
        disc_params, jnp.concatenate([real, fake]), disc_rng, tiny_config), 2)
    return losses.discriminator_loss(real_logits, fake_logits)[0]

  def generator_loss(params, disc_params, adversarial_key):
    out = forward(params)
    fake_logits = train_step.discriminator_logits(
        disc_params, out.output, adversarial_key, tiny_config)
    return train_step.output_loss(out, fake_logits, batch, tiny_config)[0]

  @jax.jit
  def expected():
    fake = forward(state.params).output
    d_loss, d_grads = jax.value_and_grad(discriminator_loss)(
        state.disc_params, fake)
    updates, _ = disc_tx.update(d_grads, state.disc_opt_state,
                                state.disc_params)
    updated = optax.apply_updates(state.disc_params, updates)
    grad = jax.value_and_grad(generator_loss)
    return (d_loss, d_grads, updated,
            grad(state.params, updated, adversarial_rng),
            grad(state.params, state.disc_params, adversarial_rng))

  d_loss, d_grads, updated, (loss, grads), (_, grads_before_update) = (
      expected())
  actual_grads, _, (disc_params, _), metrics = jax.jit(
      functools.partial(train_step.gradients, config=tiny_config))(
          state, batch, rng)
  np.testing.assert_allclose(metrics['d_loss'], d_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-6)
  d_grads = flat(d_grads)
  for name, value in flat(updated).items():
    # Adam's first step is lr g / (|g| + 1e-8), about +-lr: 2% of the
    # learning rate tells steps apart, except where |g| is near 1e-8, as
    # the gradients of two computations differ in their last bits.
    clear = np.abs(d_grads[name]) > 1e-7
    assert clear.mean() > 0.5, name
    np.testing.assert_allclose(flat(disc_params)[name][clear], value[clear],
                               rtol=0,
                               atol=0.02 * tiny_config.optim.disc_learning_rate,
                               err_msg=name)
  actual, wanted = flat(actual_grads), flat(grads)
  for name, value in wanted.items():
    np.testing.assert_allclose(actual[name], value, rtol=1e-4, atol=1e-7,
                               err_msg=name)
  # The gradient through the discriminator before its update is another one.
  stage = 'cascade_stages_0/output_proj/kernel'
  assert not np.allclose(flat(grads_before_update)[stage], actual[stage],
                         rtol=1e-3)


def test_discriminator_adamw_uses_beta1_one_half(tiny_config):
  """Two steps of the GAN discriminator's optimiser match Adam(0.5, 0.999)."""
  _, disc_tx = optimizers.make_optimizers(tiny_config.optim)
  params = {'w': jnp.zeros(3)}  # zero weights: weight decay adds nothing
  g1, g2 = jnp.array([0.1, -0.2, 0.3]), jnp.array([0.3, 0.1, -0.1])
  state = disc_tx.init(params)
  for grad in (g1, g2):
    updates, state = disc_tx.update({'w': grad}, state, params)

  def adam(b1, b2=0.999, lr=5e-5, eps=1e-8):
    m = ((1 - b1) * b1 * g1 + (1 - b1) * g2) / (1 - b1 ** 2)
    v = ((1 - b2) * b2 * g1 ** 2 + (1 - b2) * g2 ** 2) / (1 - b2 ** 2)
    return -lr * m / (jnp.sqrt(v) + eps)

  np.testing.assert_allclose(updates['w'], adam(0.5), rtol=1e-5)
  assert not np.allclose(updates['w'], adam(0.9), rtol=1e-2)


@pytest.fixture(scope='module')
def compiled(tiny_config):
  """Jitted init, train step (donating its state) and eval step, and a batch.

  Shared so that each compiles once; the step donates its state, so every
  test starts from a fresh init().
  """
  init = jax.jit(functools.partial(train_step.create_train_state, tiny_config))
  return (lambda: init(jax.random.key(0)), *jitted_steps(tiny_config),
          make_batch(tiny_config))


def test_train_step_updates_everything_and_reports_metrics(compiled):
  init, step, evaluate, batch = compiled
  state = init()
  before = flat(state)
  state, metrics = step(state, batch, jax.random.key(0))
  assert set(metrics) == STEP_METRICS
  np.testing.assert_array_equal(metrics.pop('data_fault'),
                                latent_space.NO_FAULT)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics['skipped']) == 0.0
  assert 0.0 < float(metrics['complementarity']) < 1.0
  after = flat(state)
  assert after['step'] == 1
  for name in before:
    if name == 'step':
      continue
    unchanged = np.array_equal(before[name], after[name])
    # The style discriminator has no gradient and no weight decay.
    frozen = '/creative_agent/discriminator/' in f'/{name}'
    assert unchanged == frozen, name
  eval_metrics = [evaluate(state, batch) for _ in range(2)]
  np.testing.assert_array_equal(eval_metrics[0]['data_fault'],
                                latent_space.NO_FAULT)
  assert set(eval_metrics[0]) == STEP_METRICS - {
      'grad_norm', 'learning_rate', 'disc_grad_norm', 'skipped'}
  assert jax.tree.all(jax.tree.map(np.array_equal, *eval_metrics))


def test_seed_recipe_objectives_at_step_zero(compiled):
  """The seed run's weights: no reconstruction term; validation 0.1 mask_reg."""
  init, step, evaluate, batch = compiled
  _, metrics = step(init(), batch, jax.random.key(0))
  m = {name: float(value) for name, value in metrics.items()
       if name != 'data_fault'}
  assert m['loss'] == pytest.approx(
      0.1 * m['mask_reg'] + 5.0 * m['balance'] + 0.1 * m['g_adv'], rel=1e-6)
  assert m['mask_reg'] == pytest.approx(
      1.0 * m['overlap'] + 0.5 * m['coverage'] + 5.0 * m['temporal'],
      rel=1e-6)
  val = evaluate(init(), batch)
  assert float(val['loss']) == pytest.approx(0.1 * float(val['mask_reg']),
                                             rel=1e-6)


@pytest.mark.parametrize('clip, row, frame, channel', [
    ('input', 0, 0, 0), ('target', 1, 5, 7)])
def test_a_non_finite_latent_is_a_fault_and_its_step_is_skipped(
    compiled, clip, row, frame, channel):
  init, step, evaluate, batch = compiled
  state = init()
  before = flat(state)
  bad = dict(batch, **{clip: batch[clip].at[row, frame, channel].set(
      jnp.inf)})
  window = row + (len(batch['input']) if clip == 'target' else 0)
  fault = [window, frame * batch['input'].shape[-1] + channel]
  np.testing.assert_array_equal(evaluate(state, bad)['data_fault'], fault)
  state, metrics = step(state, bad, jax.random.key(0))
  assert float(metrics['skipped']) == 1.0
  np.testing.assert_array_equal(metrics['data_fault'], fault)
  after = flat(state)
  for name in before:
    np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_a_latent_beyond_the_bound_is_a_fault(tiny_config):
  """The bound of latents.check_values: OUTLIER_STDS outlier scales."""
  dim = tiny_config.model.latent_dim
  space = latent_space.LatentSpace(
      mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32),
      check_mean=np.full(dim, 2.0, np.float32),
      check_scale=np.full(dim, 0.5, np.float32))
  clips = np.full((2, 3, dim), 2.0, np.float16)
  within = clips.copy()
  within[1, 2, 3] = 2.0 + 0.5 * latents.OUTLIER_STDS
  beyond = within.copy()
  beyond[0, 1, 4] = 2.0 - 0.5 * (latents.OUTLIER_STDS + 4)
  np.testing.assert_array_equal(space.fault(clips, within),
                                latent_space.NO_FAULT)
  np.testing.assert_array_equal(space.fault(clips, beyond), [2, dim + 4])
  np.testing.assert_array_equal(space.fault(beyond, clips), [0, dim + 4])


def test_overfitting_two_pairs_learns_complementary_balanced_masks(
    tiny_config):
  config = train_config.changed(tiny_config, {
      'loss.gan_weight': 0.0,  # no discriminator: fast and steady
      'optim.learning_rate': 1e-3})
  state = init_state(config)
  # Start from masks that keep ~88% of both clips: low complementarity and a
  # large balance loss, both of which training has to fix.
  params = flax.traverse_util.flatten_dict(state.params)
  for name in params:
    if name[-3:] in (('input_mask_generator', 'layers_2', 'bias'),
                     ('target_mask_generator', 'layers_2', 'bias')):
      params[name] = params[name] + 2.0
  state = state.replace(params=flax.traverse_util.unflatten_dict(params))
  step, evaluate = jitted_steps(config)
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


@pytest.fixture(scope='module')
def stabilised(tiny_config):
  """The tiny config with every GAN stabiliser on, the discriminator without
  dropout (so that its examples are independent), and its jitted steps."""
  config = train_config.changed(tiny_config, {
      'optim.ema_decay': 0.5, 'loss.r1_weight': 1.0,
      'loss.disc_label_smoothing': 0.1, 'model.disc_dropout': 0.0})
  return config, *jitted_steps(config)


def test_the_moving_average_follows_each_update_and_is_what_validates(
    stabilised, tmp_path):
  config, step, evaluate = stabilised
  batch = make_batch(config)
  state = init_state(config)
  params = [flat(state.params)]
  jax.tree.map(np.testing.assert_array_equal, flat(state.ema_params),
               params[0])
  for seed, rate in ((0, 0.1), (1, 2 / 11)):  # min(0.5, (1 + n) / (10 + n))
    ema = flat(state.ema_params)
    state, metrics = step(state, batch, jax.random.key(seed))
    params.append(flat(state.params))
    assert float(metrics['skipped']) == 0.0 and float(metrics['r1']) > 0.0
    for name, value in flat(state.ema_params).items():
      np.testing.assert_allclose(
          value, rate * ema[name] + (1 - rate) * params[-1][name],
          rtol=1e-5, atol=1e-7, err_msg=name)
  assert any(not np.array_equal(params[-1][name], value)
             for name, value in flat(state.ema_params).items())
  # Validation runs the average, not the trained weights.
  no_average = train_step.TrainState(**{
      **{name: getattr(state, name) for name in (
          'step', 'batch_stats', 'opt_state', 'disc_params',
          'disc_opt_state')}, 'params': state.ema_params})
  np.testing.assert_array_equal(
      evaluate(state, batch)['loss'],
      jitted_steps(train_config.changed(config, {'optim.ema_decay': 0.0})
                   )[1](no_average, batch)['loss'])


def test_r1_penalty_is_the_mean_squared_input_gradient(stabilised):
  config, _, _ = stabilised
  state = init_state(config)
  batch = make_batch(config)
  real, fake = batch['target'], batch['input']
  rng = jax.random.key(0)

  @jax.jit
  def from_one_forward():  # as the step takes it: reals and fakes together
    logits, logits_vjp = jax.vjp(lambda x: train_step.discriminator_logits(
        state.disc_params, x, rng, config), jnp.concatenate([real, fake]))
    return train_step.r1_penalty(logits_vjp, jnp.split(logits, 2)[0])

  penalty = from_one_forward()

  def logit(x):  # one example alone
    return train_step.discriminator_logits(state.disc_params, x[None], rng,
                                           config)[0]

  grads = jax.vmap(jax.grad(logit))(real)
  np.testing.assert_allclose(
      penalty, np.mean(np.sum(np.square(grads), axis=(1, 2))), rtol=1e-5)
  assert float(penalty) > 0.0


def test_a_scheduled_learning_rate_scales_the_updates(tiny_config):
  """optim.lr_schedule 'cosine' (warm-up of 2 updates): the first update is
  0 x the constant rate's, the second 0.5 x. The discriminator updates
  first, from the same state, so its updates compare exactly (the
  generator's then see another discriminator); its moments are the
  constant rate's."""
  cosine_config = train_config.changed(tiny_config, {
      'optim.lr_schedule': 'cosine', 'optim.warmup_steps': 2})
  space = latent_space.identity(tiny_config.model.latent_dim)
  steps = {name: jax.jit(functools.partial(
      train_step.train_step, config=config, total_steps=6))
           for name, config in (('constant', tiny_config),
                                ('cosine', cosine_config))}
  batch = make_batch(tiny_config)
  state = init_state(tiny_config)
  for seed, scale in ((0, 0.0), (1, 0.5)):
    rng = jax.random.key(seed)
    constant, _ = steps['constant'](state, batch, rng, space)
    scheduled, metrics = steps['cosine'](state, batch, rng, space)
    np.testing.assert_allclose(
        metrics['learning_rate'], scale * tiny_config.optim.learning_rate)
    before, full, scaled = (flat(s.disc_params)
                            for s in (state, constant, scheduled))
    for name, value in before.items():
      np.testing.assert_allclose(
          scaled[name] - value, scale * (full[name] - value), rtol=1e-3,
          atol=1e-7, err_msg=name)  # the rounding of the parameters
    jax.tree.map(np.testing.assert_array_equal,
                 flat(scheduled.disc_opt_state), flat(constant.disc_opt_state))
    if scale == 0.0:
      jax.tree.map(np.testing.assert_array_equal, flat(scheduled.params),
                   flat(state.params))
    assert int(scheduled.step) == int(state.step) + 1
    state = scheduled


def test_a_schedule_needs_the_run_length():
  o = run_config.Config().optim
  assert optimizers.learning_rate_scale(o, 3, None) is None
  cosine = dataclasses.replace(o, lr_schedule='cosine', warmup_steps=2,
                               final_lr_fraction=0.1)
  np.testing.assert_allclose(
      [optimizers.learning_rate_scale(cosine, step, 6)
       for step in range(8)],
      [0, 0.5, 1, 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4)), 0.55,
       0.1 + 0.9 * 0.5 * (1 + np.cos(3 * np.pi / 4)), 0.1, 0.1], rtol=1e-6)
  with pytest.raises(ValueError, match='needs the run\'s length'):
    optimizers.learning_rate_scale(cosine, 0, None)


@pytest.mark.parametrize('backend', ['cpu', 'gpu'])
def test_an_update_applies_only_when_finite_on_each_compilers_path(backend):
  """The conditional (CPU) and the select (GPU) keep a skipped step's state,
  whatever its update, and apply a finite step's."""
  state = {'step': jnp.int32(3), 'params': jnp.arange(4.0),
           'mu': jnp.ones((2, 3))}
  increment = lambda state: jax.tree.map(lambda x: x + 1, state)
  poison = lambda state: dict(increment(state), params=state['params'] * np.nan)
  updated = jax.jit(functools.partial(train_step.updated_where,
                                      backend=backend), static_argnums=1)
  jax.tree.map(np.testing.assert_array_equal,
               updated(jnp.bool_(False), poison, state), state)
  jax.tree.map(lambda new, old: np.testing.assert_array_equal(new, old + 1),
               updated(jnp.bool_(True), increment, state), state)
