"""The generator's and the GAN discriminator's AdamW, each over one flat array.

optax.flatten concatenates the trained parameters (in jax.tree.leaves order)
so that clipping and AdamW run as a few kernels over one vector instead of
several per parameter. The creative agent's style discriminator is frozen:
no loss uses it, so PyTorch's AdamW, which skips parameters without a
gradient, never moves or decays it; here it gets a zero update and no
moments.
"""

import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

TRAINED, FROZEN = 'trained', 'frozen'


def _labels(params):
  return flax.traverse_util.path_aware_map(
      lambda path, _: FROZEN if 'discriminator' in path else TRAINED, params)


def adamw(learning_rate, *, b1, b2, weight_decay, clip_norm):
  """Global-norm clipping, then AdamW, over the trained parameters as one
  flat array. No parameters (the GAN off) have an empty state."""
  tx = optax.partition({
      TRAINED: optax.flatten(optax.chain(
          optax.clip_by_global_norm(clip_norm),
          optax.adamw(learning_rate, b1=b1, b2=b2,
                      weight_decay=weight_decay))),
      FROZEN: optax.set_to_zero()}, _labels)

  def init(params):
    return tx.init(params) if jax.tree.leaves(params) else optax.EmptyState()

  def update(updates, state, params=None):
    if not jax.tree.leaves(updates):
      return updates, state
    return tx.update(updates, state, params)

  return optax.GradientTransformation(init, update)


def make_optimizers(o):
  """(generator, discriminator) transformations of an OptimConfig."""
  return (adamw(o.learning_rate, b1=0.9, b2=0.999,
                weight_decay=o.weight_decay, clip_norm=o.grad_clip_norm),
          adamw(o.disc_learning_rate, b1=o.disc_b1, b2=o.disc_b2,
                weight_decay=o.disc_weight_decay,
                clip_norm=o.disc_grad_clip_norm))


def learning_rate_scale(o, step, total_steps):
  """The factor of both learning rates after `step` applied updates of a
  run of `total_steps` (an OptimConfig `o`'s lr_schedule), or None when
  they are constant. The updates are scaled by it, as optax scales them by
  a scheduled rate: AdamW's state does not change."""
  if o.lr_schedule == 'constant':
    return None
  if total_steps is None:
    raise ValueError(f'optim.lr_schedule {o.lr_schedule!r} needs the run\'s '
                     'length')
  return optax.warmup_cosine_decay_schedule(
      0.0, 1.0, o.warmup_steps, max(total_steps, o.warmup_steps + 1),
      o.final_lr_fraction)(step)


def apply_updates(params, updates, scale=None):
  """optax.apply_updates, the updates first scaled by learning_rate_scale's
  factor when there is one."""
  if scale is not None:
    updates = jax.tree.map(lambda update: update * scale, updates)
  return optax.apply_updates(params, updates)


def _flat(tree, params) -> jax.Array:
  """The trained leaves of a tree shaped like `params` as one array, in
  optax.flatten's order."""
  return jnp.concatenate([jnp.ravel(leaf) for leaf, label in zip(
      jax.tree.leaves(tree), jax.tree.leaves(_labels(params)))
                          if label == TRAINED] or [jnp.zeros(0)])


def flat_norm(tree, params) -> jax.Array:
  """The global norm of a tree shaped like `params`, over its trained
  leaves taken as one array (one reduction, not one per leaf)."""
  return jnp.sqrt(jnp.sum(jnp.square(_flat(tree, params))))


def with_moments(tx, params, count, mu, nu):
  """tx's state for `params` with AdamW's step count and moments, given as
  trees shaped like `params` (a converted or older checkpoint's)."""
  return optax.tree.set(tx.init(params), count=jnp.asarray(count, jnp.int32),
                        mu=_flat(mu, params), nu=_flat(nu, params))


def moments(opt_state, params):
  """(count, mu, nu) of a state of `adamw`: mu and nu as trees shaped like
  `params`, zero where frozen."""
  leaves, treedef = jax.tree.flatten(params)
  labels = jax.tree.leaves(_labels(params))

  def tree(flat):
    parts, offset = [], 0
    for leaf, label in zip(leaves, labels):
      if label == FROZEN:
        parts.append(jnp.zeros_like(leaf))
        continue
      parts.append(flat[offset:offset + leaf.size].reshape(leaf.shape))
      offset += leaf.size
    return jax.tree.unflatten(treedef, parts)

  return (optax.tree.get(opt_state, 'count'),
          tree(optax.tree.get(opt_state, 'mu')),
          tree(optax.tree.get(opt_state, 'nu')))


def per_leaf_state(params):
  """The layout of an `adamw` state in checkpoints written before the
  optimisers ran flat: optax.chain(clip, adamw) over the parameter tree,
  with the weight decay masked where a parameter is frozen."""
  labels = _labels(params)
  masked = FROZEN in jax.tree.leaves(labels)
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
      1.0, mask=jax.tree.map(lambda label: label == TRAINED, labels)
      if masked else None)).init(params)


def from_per_leaf(tx, params, state):
  """tx's state for `params` from a state of per_leaf_state's layout."""
  if not jax.tree.leaves(params):
    return tx.init(params)
  adam = state[1][0]
  return with_moments(tx, params, adam.count, adam.mu, adam.nu)
