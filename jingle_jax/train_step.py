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
      dtype=compute_dtype(m.compute_dtype),
      # Workdir configs older than the field: it only shapes training memory.
      remat=m.get('remat', 'none'))


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


def generator_forward(params, batch_stats, batch, rng, config, train=True):
  """The model on a batch: (CascadeOutput, updated batch_stats).

  `rng` drives anti-cheating noise, Gumbel noise and dropout in training and
  is ignored (may be None) in evaluation.
  """
  rngs = dict(zip(('noise', 'dropout'), jax.random.split(rng))) if train else {}
  out, updated = build_model(config).apply(
      {'params': params, 'batch_stats': batch_stats}, batch['input'],
      batch['target'], train=train, rngs=rngs, mutable=['batch_stats'])
  return out, updated['batch_stats']


def discriminator_logits(disc_params, latents, rng, config, train=True):
  """GAN discriminator logits [B] of latents [B, T, D]."""
  return build_discriminator(config).apply(
      {'params': disc_params}, latents, train=train,
      rngs={'dropout': rng} if train else {})


def real_samples(batch):
  """The GAN's real samples: the batch's targets rolled by one pair."""
  return jnp.roll(batch['target'], 1, axis=0)


def output_loss(out, fake_logits, batch, config):
  """Generator loss (SPEC 4.5) of the model's outputs: (loss, metrics).

  fake_logits: the discriminator's logits on out.output, or None without GAN.
  """
  loss, metrics = losses.generator_loss(
      out.output, batch['input'], batch['target'], out.input_mask,
      out.target_mask, fake_logits, config.loss,
      learned_masks=config.model.use_creative_agent)
  metrics['rms_scale'] = jnp.mean(out.rms_scale)
  return loss, metrics


def gradients(state: TrainState, batch, rng, config):
  """(generator grads, discriminator grads or None, batch_stats, metrics).

  One forward of the generator, and one of the discriminator on the real and
  on the fake samples, serve both updates: the discriminator's loss (fake
  held constant) and the generator's adversarial loss, whose gradient
  reaches the generator through D's input only.
  """
  gen_rng, disc_rng = jax.random.split(rng)
  out, generator_vjp, batch_stats = jax.vjp(
      lambda params: generator_forward(params, state.batch_stats, batch,
                                       gen_rng, config),
      state.params, has_aux=True)
  with_gan = build_discriminator(config) is not None
  fake_logits = None
  if with_gan:
    real_rng, fake_rng = jax.random.split(disc_rng)
    real_logits, real_vjp = jax.vjp(
        lambda disc_params: discriminator_logits(
            disc_params, real_samples(batch), real_rng, config),
        state.disc_params)
    fake_logits, fake_vjp = jax.vjp(
        lambda disc_params, fake: discriminator_logits(
            disc_params, fake, fake_rng, config),
        state.disc_params, out.output)
  (_, metrics), (out_grads, fake_logits_grads) = jax.value_and_grad(
      output_loss, argnums=(0, 1), has_aux=True)(out, fake_logits, batch,
                                                   config)
  d_grads = None
  if with_gan:
    _, adversarial_grads = fake_vjp(fake_logits_grads)
    out_grads = out_grads.replace(output=out_grads.output + adversarial_grads)
    (_, d_metrics), (real_grads, fake_grads) = jax.value_and_grad(
        losses.discriminator_loss, argnums=(0, 1), has_aux=True)(
            real_logits, fake_logits)
    d_grads = jax.tree.map(jnp.add, real_vjp(real_grads)[0],
                           fake_vjp(fake_grads)[0])
    metrics.update(d_metrics)
  (grads,) = generator_vjp(out_grads)
  return grads, d_grads, batch_stats, metrics


def train_step(state: TrainState, batch, rng, *, config):
  """One generator and one discriminator AdamW update from the same forward.

  batch: {'input', 'target'}: float32 latents [B, T, D]. A step whose loss or
  gradients are not finite changes nothing (the step counter included) and
  reports skipped = 1.
  """
  tx, disc_tx = make_optimizers(config)
  grads, d_grads, batch_stats, metrics = gradients(state, batch, rng, config)
  metrics['grad_norm'] = optax.tree.norm(grads)  # before clipping
  metrics['learning_rate'] = jnp.float32(config.optim.learning_rate)
  finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
  if d_grads is not None:
    metrics['disc_grad_norm'] = optax.tree.norm(d_grads)
    finite &= (jnp.isfinite(metrics['d_loss']) &
               jnp.isfinite(metrics['disc_grad_norm']))

  def update(state):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats, opt_state=opt_state)
    if d_grads is not None:
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
  out, _ = generator_forward(state.params, state.batch_stats, batch, None,
                             config, train=False)
  fake_logits = None
  if build_discriminator(config) is not None:
    fake_logits = discriminator_logits(state.disc_params, out.output, None,
                                       config, train=False)
  _, metrics = output_loss(out, fake_logits, batch, config)
  if fake_logits is not None:
    real_logits = discriminator_logits(state.disc_params, real_samples(batch),
                                       None, config, train=False)
    metrics.update(losses.discriminator_loss(real_logits, fake_logits)[1])
  return metrics


def make_train_step(config):
  """train_step jitted for a single device or replicated use, donating state."""
  return jax.jit(functools.partial(train_step, config=config),
                 donate_argnums=0)


def make_eval_step(config):
  return jax.jit(functools.partial(eval_step, config=config))
