"""Train state, one compiled generator + discriminator update, and evaluation.

The step functions are pure and mesh-agnostic: bind the config with
functools.partial and jit them with whatever shardings the caller uses,
donating the state (argument 0) of `train_step`.
"""

import functools
from typing import Any

import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

from jingle_jax import losses
from jingle_jax.models import CascadeTransformer
from jingle_jax.models import LatentDiscriminator

INIT_FRAMES = 16  # parameter shapes do not depend on the clip length


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32: updates applied (skipped steps do not count)
  params: Any  # generator parameters (the 27.4M of the seed)
  batch_stats: Any  # spectral-norm u/v vectors
  opt_state: Any  # generator AdamW state
  disc_params: Any  # LatentDiscriminator parameters; {} when gan_weight is 0
  disc_opt_state: Any  # discriminator AdamW state


def compute_dtype(name: str):
  """config.model.compute_dtype: 'auto' is float32 on CPU, else bfloat16."""
  if name == 'auto':
    return jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
  if name not in ('float32', 'bfloat16'):
    raise ValueError('model.compute_dtype must be auto, float32 or bfloat16, '
                     f'not {name!r}')
  return jnp.dtype(name)


def build_model(config) -> CascadeTransformer:
  m = config.model
  return CascadeTransformer(
      latent_dim=m.latent_dim, num_stages=m.num_stages,
      num_layers=m.num_layers, num_heads=m.num_heads, dropout=m.dropout,
      attention_dropout=m.attention_dropout, anti_cheating=m.anti_cheating,
      use_creative_agent=m.use_creative_agent, fixed_masking=m.fixed_masking,
      hard_masks=m.hard_masks, mask_hidden=m.mask_hidden,
      mask_heads=m.mask_heads, max_len=m.max_len,
      dtype=compute_dtype(m.compute_dtype))


def build_discriminator(config) -> LatentDiscriminator | None:
  """The GAN discriminator, or None when the GAN is off (gan_weight 0)."""
  if config.loss.gan_weight == 0:
    return None
  return LatentDiscriminator(dtype=compute_dtype(config.model.compute_dtype))


def _decayed(params):
  """Weight decay everywhere but the creative agent's style discriminator.

  No loss uses that discriminator, so its gradient is zero; PyTorch's AdamW
  skips such parameters entirely, and this keeps them unchanged likewise.
  """
  return flax.traverse_util.path_aware_map(
      lambda path, _: 'discriminator' not in path, params)


def make_optimizers(config):
  """(generator, discriminator) optax transformations, clipping included."""
  o = config.optim
  tx = optax.chain(
      optax.clip_by_global_norm(o.grad_clip_norm),
      optax.adamw(o.learning_rate, weight_decay=o.weight_decay,
                  mask=_decayed))
  disc_tx = optax.chain(
      optax.clip_by_global_norm(o.disc_grad_clip_norm),
      optax.adamw(o.disc_learning_rate, weight_decay=o.disc_weight_decay))
  return tx, disc_tx


def create_train_state(config, rng) -> TrainState:
  """Fresh parameters and optimiser states (jit it to place them on devices)."""
  model, disc = build_model(config), build_discriminator(config)
  model_rng, disc_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, INIT_FRAMES, config.model.latent_dim), jnp.float32)
  variables = model.init(model_rng, dummy, dummy, train=False)
  disc_params = ({} if disc is None else
                 disc.init(disc_rng, dummy, train=False)['params'])
  tx, disc_tx = make_optimizers(config)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=variables['params'],
      batch_stats=variables['batch_stats'],
      opt_state=tx.init(variables['params']), disc_params=disc_params,
      disc_opt_state=disc_tx.init(disc_params))


def generator_objective(params, state, batch, rng, config, train=True):
  """Generator loss; returns (loss, (output, new batch_stats, metrics)).

  `rng` drives anti-cheating noise, Gumbel noise and dropout in training and
  is ignored (may be None) in evaluation.
  """
  model, disc = build_model(config), build_discriminator(config)
  rngs = {}
  if train:
    rngs = dict(zip(('noise', 'dropout', 'gan'), jax.random.split(rng, 3)))
  out, updated = model.apply(
      {'params': params, 'batch_stats': state.batch_stats}, batch['input'],
      batch['target'], train=train, rngs=rngs, mutable=['batch_stats'])
  fake_logits = None
  if disc is not None:  # gradients reach the generator through D's input
    fake_logits = disc.apply({'params': state.disc_params}, out.output,
                             train=train,
                             rngs={'dropout': rngs['gan']} if train else {})
  loss, metrics = losses.generator_loss(
      out.output, batch['input'], batch['target'], out.input_mask,
      out.target_mask, fake_logits, config.loss,
      learned_masks=config.model.use_creative_agent)
  metrics['rms_scale'] = jnp.mean(out.rms_scale)
  return loss, (out.output, updated['batch_stats'], metrics)


def discriminator_objective(disc_params, batch, fake, rng, config, train=True):
  """D loss on real = targets rolled by one pair, fake = generator output."""
  real = jnp.roll(batch['target'], 1, axis=0)
  logits = build_discriminator(config).apply(
      {'params': disc_params}, jnp.concatenate([real, fake]), train=train,
      rngs={'dropout': rng} if train else {})
  return losses.discriminator_loss(*jnp.split(logits, 2))


def train_step(state: TrainState, batch, rng, *, config):
  """One generator and one discriminator AdamW update from the same forward.

  batch: {'input', 'target'}: float32 latents [B, T, D]. A step whose loss or
  gradients are not finite changes nothing (the step counter included) and
  reports skipped = 1.
  """
  tx, disc_tx = make_optimizers(config)
  with_gan = build_discriminator(config) is not None
  gen_rng, disc_rng = jax.random.split(rng)
  (loss, (output, batch_stats, metrics)), grads = jax.value_and_grad(
      generator_objective, has_aux=True)(state.params, state, batch, gen_rng,
                                         config)
  metrics['grad_norm'] = optax.tree.norm(grads)  # before clipping
  metrics['learning_rate'] = jnp.float32(config.optim.learning_rate)
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  d_grads = None
  if with_gan:
    (d_loss, d_metrics), d_grads = jax.value_and_grad(
        discriminator_objective, has_aux=True)(
            state.disc_params, batch, jax.lax.stop_gradient(output), disc_rng,
            config)
    metrics.update(d_metrics, disc_grad_norm=optax.tree.norm(d_grads))
    finite &= jnp.isfinite(d_loss) & jnp.isfinite(metrics['disc_grad_norm'])

  def update(state):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats, opt_state=opt_state)
    if with_gan:
      d_updates, disc_opt_state = disc_tx.update(
          d_grads, state.disc_opt_state, state.disc_params)
      state = state.replace(
          disc_params=optax.apply_updates(state.disc_params, d_updates),
          disc_opt_state=disc_opt_state)
    return state

  # A conditional rather than a select over the state: the update runs in
  # place on the donated buffers, and a skipped step passes them through.
  new_state = jax.lax.cond(finite, update, lambda state: state, state)
  metrics['skipped'] = 1.0 - finite.astype(jnp.float32)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, config):
  """Deterministic metrics: no dropout, no noise, stored spectral norms."""
  _, (output, _, metrics) = generator_objective(
      state.params, state, batch, None, config, train=False)
  if build_discriminator(config) is not None:
    metrics.update(discriminator_objective(
        state.disc_params, batch, output, None, config, train=False)[1])
  return metrics


def make_train_step(config):
  """train_step jitted for a single device or replicated use, donating state."""
  return jax.jit(functools.partial(train_step, config=config),
                 donate_argnums=0)


def make_eval_step(config):
  return jax.jit(functools.partial(eval_step, config=config))
