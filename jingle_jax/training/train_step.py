"""Train state, one compiled discriminator + generator update, and evaluation.

The step functions are pure and mesh-agnostic: bind the config (a
run_config.Config) with functools.partial and jit them with whatever
shardings the caller uses, donating `donated_arguments()` of `train_step`.

With audio-domain loss weights (DESIGN.md 4.5a), the steps take `decoder`, an
encodec_decoding.DecoderBundle; the frozen decoder then runs inside the
step. Without them
it is None and nothing of it is compiled.
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jingle_jax.models import CascadeTransformer
from jingle_jax.models import encodec_decoder
from jingle_jax.models import hashed_random
from jingle_jax.models import LatentDiscriminator
from jingle_jax.models.cascade import copy_first_layers
from jingle_jax.training import audio_losses
from jingle_jax.training import losses
from jingle_jax.training import optimizers

INIT_FRAMES = 16  # parameter shapes do not depend on the clip length


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32: updates applied (skipped steps do not count)
  params: Any  # generator parameters (the 27.4M of the seed)
  batch_stats: Any  # spectral-norm u/v vectors
  opt_state: Any  # generator AdamW state
  disc_params: Any  # LatentDiscriminator parameters; {} when gan_weight is 0
  disc_opt_state: Any  # discriminator AdamW state
  # Moving average of params; {} when optim.ema_decay is 0.
  ema_params: Any = flax.struct.field(default_factory=dict)

  @property
  def inference_params(self):
    """The generator parameters validation and inference run: the moving
    average when one is kept."""
    return self.ema_params or self.params


def build_discriminator(config) -> LatentDiscriminator | None:
  """The GAN discriminator, or None when the GAN is off (gan_weight 0)."""
  if config.loss.gan_weight == 0:
    return None
  return LatentDiscriminator(dropout=config.model.disc_dropout,
                             dtype=config.model.dtype)


def create_train_state(config, rng) -> TrainState:
  """Fresh parameters and optimiser states (jit it to place them on devices).

  Initialised as the original's PyTorch modules are (DESIGN.md 4.5c), the layers
  of a stage equal (copy_first_layers).
  """
  model = CascadeTransformer(config.model)
  disc = build_discriminator(config)
  model_rng, disc_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, INIT_FRAMES, config.model.latent_dim), jnp.float32)
  variables = model.init(model_rng, dummy, dummy, train=False)
  params = copy_first_layers(variables['params'])
  disc_params = ({} if disc is None else
                 disc.init(disc_rng, dummy, train=False)['params'])
  tx, disc_tx = optimizers.make_optimizers(config.optim)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables['batch_stats'], opt_state=tx.init(params),
      disc_params=disc_params, disc_opt_state=disc_tx.init(disc_params),
      ema_params=params if config.optim.ema_decay else {})


def ema_update(ema_params, params, updates_before, decay: float):
  """The moving average after an update: decay min(decay, (1 + n) / (10 + n))
  after n earlier updates (tf.train.ExponentialMovingAverage's num_updates
  rule), so that the average of a short run is not mostly its start."""
  n = updates_before.astype(jnp.float32)
  rate = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
  return optax.incremental_update(params, ema_params, 1.0 - rate)


def generator_forward(params, batch_stats, batch, rng, config, train=True):
  """The model on a batch: (CascadeOutput, updated batch_stats).

  `rng` drives anti-cheating noise, Gumbel noise and dropout in training and
  is ignored (may be None) in evaluation.
  """
  rngs = dict(zip(('noise', 'dropout'), jax.random.split(rng))) if train else {}
  out, updated = CascadeTransformer(config.model).apply(
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


def real_and_fake_logits(disc_params, batch, output, config):
  """(logits of real_samples(batch), logits of output): one forward of D in
  evaluation mode."""
  logits = discriminator_logits(
      disc_params, jnp.concatenate([real_samples(batch), output]), None,
      config, train=False)
  return jnp.split(logits, 2)


def r1_penalty(logits_vjp, real_logits):
  """Mean over the real samples of |dD(x)/dx|^2 (Mescheder et al. 2018),
  from the vector-Jacobian product of the forward that gave real_logits [B]
  for the first B of its samples: no second forward of D."""
  (grads,) = logits_vjp(jnp.concatenate([jnp.ones_like(real_logits),
                                         jnp.zeros_like(real_logits)]))
  real_grads = grads[:len(real_logits)].astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(real_grads), axis=(1, 2)))


def discriminator_update(state: TrainState, batch, output, rng, config,
                         lr_scale=None):
  """(disc_params, disc_opt_state, metrics) after one AdamW step of D, its
  update scaled by the learning-rate schedule's `lr_scale`.

  D loss = BCE(D(real), 1 - label smoothing) + BCE(D(output), 0), output
  held constant, + r1_weight / 2 x r1_penalty.
  """
  def loss_fn(disc_params):
    logits, logits_vjp = jax.vjp(
        lambda samples: discriminator_logits(disc_params, samples, rng,
                                             config),
        jnp.concatenate([real_samples(batch), output]))
    real_logits, fake_logits = jnp.split(logits, 2)
    loss, metrics = losses.discriminator_loss(
        real_logits, fake_logits,
        real_label=1.0 - config.loss.disc_label_smoothing)
    if config.loss.r1_weight:
      metrics['r1'] = r1_penalty(logits_vjp, real_logits)
      loss += 0.5 * config.loss.r1_weight * metrics['r1']
    return loss, metrics

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.disc_params)
  # Before clipping.
  metrics['disc_grad_norm'] = optimizers.flat_norm(grads, state.disc_params)
  _, disc_tx = optimizers.make_optimizers(config.optim)
  updates, disc_opt_state = disc_tx.update(grads, state.disc_opt_state,
                                           state.disc_params)
  return (optimizers.apply_updates(state.disc_params, updates, lr_scale),
          disc_opt_state, metrics)


def decode_latents(decoder, latents, model_config):
  """Audio [B, T x 320] of latents [B, T, D] in the model's space."""
  raw = latents.astype(jnp.float32) * decoder.std + decoder.mean
  return encodec_decoder.EncodecDecoder(
      model_config.dtype, remat=model_config.remat != 'none').apply(
          {'params': decoder.params}, raw)


def audio_loss(output, batch, decoder, config, validation=False):
  """(weighted audio terms, their metrics) of the output latents.

  The terms compare with the input's decoded audio and with the target
  clip's waveform, batch['target_audio'] [B, T x 320] where the dataset
  keeps it; otherwise the target's decoded audio stands in. Only what a
  weighted term needs is decoded (in one call, without gradient).
  """
  weights = config.loss
  needs_input = audio_losses.weighted(weights, audio_losses.INPUT_TERMS)
  needs_target = audio_losses.weighted(weights, audio_losses.TARGET_TERMS)
  decoded = {key: batch[key] for key, needed in (
      ('input', needs_input),
      ('target', needs_target and 'target_audio' not in batch)) if needed}
  if decoded:
    audio = jax.lax.stop_gradient(decode_latents(
        decoder, jnp.concatenate(list(decoded.values())), config.model))
    decoded = dict(zip(decoded, jnp.split(audio, len(decoded))))
  if needs_target and 'target' not in decoded:
    decoded['target'] = batch['target_audio'].astype(jnp.float32)
  return audio_losses.weighted_terms(
      decode_latents(decoder, output, config.model), decoded.get('input'),
      decoded.get('target'), weights, validation)


def output_loss(out, fake_logits, batch, config, decoder=None):
  """Generator loss (DESIGN.md 4.5) of the model's outputs: (loss, metrics).

  fake_logits: the discriminator's logits on out.output, or None without GAN.
  """
  loss, metrics = losses.generator_loss(
      out.output, batch['input'], batch['target'], out.input_mask,
      out.target_mask, fake_logits, config.loss,
      learned_masks=config.model.use_creative_agent)
  if config.loss.uses_audio:
    audio, audio_metrics = audio_loss(out.output, batch, decoder, config)
    loss += audio
    metrics.update(audio_metrics, loss=loss)
  metrics['rms_scale'] = jnp.mean(out.rms_scale)
  return loss, metrics


def gradients(state: TrainState, batch, rng, config, decoder=None,
              lr_scale=None):
  """(generator grads, batch_stats, updated discriminator or None, metrics).

  The original's order (DESIGN.md 4.4): the generator's forward; the GAN
  discriminator's update on it (the returned (disc_params, disc_opt_state));
  then the generator's loss, whose adversarial term comes from a fresh
  training-mode forward of the updated discriminator and whose gradient
  reaches the generator only.
  """
  gen_rng, disc_rng, adversarial_rng = jax.random.split(rng, 3)
  out, generator_vjp, batch_stats = jax.vjp(
      lambda params: generator_forward(params, state.batch_stats, batch,
                                       gen_rng, config),
      state.params, has_aux=True)
  disc, fake_logits, metrics = None, None, {}
  if build_discriminator(config) is not None:
    disc_params, disc_opt_state, metrics = discriminator_update(
        state, batch, jax.lax.stop_gradient(out.output), disc_rng, config,
        lr_scale)
    disc = disc_params, disc_opt_state
    fake_logits, adversarial_vjp = jax.vjp(
        lambda fake: discriminator_logits(disc_params, fake, adversarial_rng,
                                          config), out.output)
  (_, generator_metrics), (out_grads, fake_logits_grads) = jax.value_and_grad(
      output_loss, argnums=(0, 1), has_aux=True)(out, fake_logits, batch,
                                                   config, decoder)
  if fake_logits is not None:
    (adversarial_grads,) = adversarial_vjp(fake_logits_grads)
    out_grads = out_grads.replace(output=out_grads.output + adversarial_grads)
  (grads,) = generator_vjp(out_grads)
  return grads, batch_stats, disc, {**metrics, **generator_metrics}


# XLA's CPU compiler updates a donated state in place, under a conditional
# too. A GPU's copies all of a conditional's state, twice, and each donated
# parameter that a loop reads, as much memory as the donation saves; there
# a select fuses into the update's kernels, and no donation writes the new
# state beside the old (docs/BENCHMARKS.md, "the GPU compiler's kernels").


def _updates_in_place(backend) -> bool:
  """Whether the compiler of `backend` (default: jax's) is XLA's CPU's."""
  return (backend or jax.default_backend()) == 'cpu'


def donated_arguments(backend=None) -> tuple:
  """The arguments of train_step to donate for the compiler of `backend`
  (default: jax's): the state on a CPU, nothing elsewhere."""
  return (0,) if _updates_in_place(backend) else ()


def updated_where(finite, update, state, backend=None):
  """update(state) if `finite`, else `state` as it is: a conditional for
  the compiler of a CPU `backend` (default: jax's), a select elsewhere."""
  if _updates_in_place(backend):
    return jax.lax.cond(finite, update, lambda state: state, state)
  return jax.tree.map(functools.partial(jnp.where, finite), update(state),
                      state)


def train_step(state: TrainState, batch, rng, space, decoder=None, *,
               config, total_steps=None):
  """One discriminator and one generator AdamW update, in that order.

  batch: {'input', 'target'}: raw latents [B, T, D] as the dataset stores
  them, which `space` (a latent_space.LatentSpace) checks and normalises,
  and maybe 'target_audio' (audio_loss). A step whose latents hold a fault,
  or whose loss or gradients are not finite, changes nothing (the step
  counter included) and reports skipped = 1; metrics['data_fault'] is the
  batch's first fault (latent_space). total_steps: the run's length, which
  a scheduled learning rate (optim.lr_schedule) decays over.
  """
  tx, _ = optimizers.make_optimizers(config.optim)
  lr_scale = optimizers.learning_rate_scale(config.optim, state.step,
                                            total_steps)
  batch, fault = space.prepare(batch)
  # Dropout and noise draw from the cheap PRNG: a key costs no kernel.
  grads, batch_stats, disc, metrics = gradients(
      state, batch, hashed_random.key_from(rng), config, decoder, lr_scale)
  # Before clipping.
  metrics['grad_norm'] = optimizers.flat_norm(grads, state.params)
  metrics['learning_rate'] = jnp.float32(config.optim.learning_rate) * (
      1.0 if lr_scale is None else lr_scale)
  finite = (jnp.isfinite(metrics['loss']) &
            jnp.isfinite(metrics['grad_norm']) & (fault[0] < 0))
  if disc is not None:
    finite &= (jnp.isfinite(metrics['d_loss']) &
               jnp.isfinite(metrics['disc_grad_norm']))

  def update(state):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optimizers.apply_updates(state.params, updates, lr_scale)
    if config.optim.ema_decay:
      state = state.replace(ema_params=ema_update(
          state.ema_params, params, state.step, config.optim.ema_decay))
    state = state.replace(step=state.step + 1, params=params,
                          batch_stats=batch_stats, opt_state=opt_state)
    if disc is not None:
      state = state.replace(disc_params=disc[0], disc_opt_state=disc[1])
    return state

  new_state = updated_where(finite, update, state)
  metrics['skipped'] = 1.0 - finite.astype(jnp.float32)
  metrics['data_fault'] = fault
  return new_state, metrics


def eval_step(state: TrainState, batch, space, decoder=None, *, config):
  """Deterministic metrics: no dropout, no noise, stored spectral norms.

  'loss' is the validation loss of DESIGN.md 4.5b (no balance, no adversarial
  term), which picks the best checkpoint and drives early stopping; the
  other terms are reported as in training. The batch is raw, as train_step
  takes it; 'data_fault' is its first fault. batch['weight'] ([B],
  optional) leaves out the repeats that fill up a last batch.
  """
  batch, fault = space.prepare(batch)
  out, _ = generator_forward(state.inference_params, state.batch_stats,
                             batch, None, config, train=False)
  weights = batch.get('weight')
  loss, metrics = losses.validation_loss(
      out.output, batch['input'], batch['target'], out.input_mask,
      out.target_mask, config.loss,
      learned_masks=config.model.use_creative_agent, example_weights=weights)
  if config.loss.uses_audio:
    # The audio terms are over the whole batch, repeats included.
    audio, audio_metrics = audio_loss(out.output, batch, decoder, config,
                                      validation=True)
    loss += audio
    metrics.update(audio_metrics)
  metrics.update(loss=loss,
                 rms_scale=losses.batch_mean(out.rms_scale, weights))
  if build_discriminator(config) is not None:
    real_logits, fake_logits = real_and_fake_logits(
        state.disc_params, batch, out.output, config)
    metrics.update(
        losses.discriminator_loss(real_logits, fake_logits, weights)[1],
        g_adv=losses.bce_with_logits(fake_logits, 1.0, weights))
  metrics['data_fault'] = fault
  return metrics
