"""The cascade transformer (DESIGN.md 4.3): the generator of Jingle_D.

Layout is [B, T, D]. Names follow the PyTorch keys: `cascade_stages.{s}` ->
`cascade_stages_{s}`, and `self_attn`, `linear1`, `linear2`, `norm1`,
`norm2`, `input_norm`, `post_norm`, `output_proj` as they are. A stage's L
encoder layers run as one scan: their parameters are stacked under
`layers` on a leading layer axis, where PyTorch has `transformer.layers.{l}`
(unstack_layers gives that view, `layers_{l}`).
"""

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.models import attention
from jingle_jax.models import baselines
from jingle_jax.models.config import ModelConfig
from jingle_jax.models.dropout import Dropout
from jingle_jax.models.layers import LayerNorm
from jingle_jax.models.layers import linear
from jingle_jax.models.layers import MultiheadAttention
from jingle_jax.models.layers import torch_bias_init
from jingle_jax.models.layers import torch_kernel_init
from jingle_jax.models.mask_generator import CreativeAgent
from jingle_jax.models.mask_generator import example_rms

LAYER_NORM_EPSILON = 1e-5  # PyTorch's default
RMS_SCALE_RANGE = (0.7, 1.5)
# What remat 'layers' keeps of a layer's forward pass: the outputs of its
# projections and of its attention (not the [T, S] weights).
LAYER_POLICY = jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.save_only_these_names(attention.RESIDUALS_NAME))


@functools.lru_cache(maxsize=None)
def sinusoidal_positions(max_len: int, width: int) -> np.ndarray:
  """[max_len, width] table: sin on even channels, cos on odd ones."""
  position = np.arange(max_len, dtype=np.float64)[:, None]
  frequency = np.exp(np.arange(0, width, 2) * (-np.log(10000.0) / width))
  table = np.zeros((max_len, width), np.float32)
  table[:, 0::2] = np.sin(position * frequency)
  table[:, 1::2] = np.cos(position * frequency)
  return table


def _l2_normalize(x, epsilon):
  return x / jnp.maximum(jnp.linalg.norm(x), epsilon)


class SpectralNormDense(nn.Module):
  """Dense layer divided by its largest singular value, as torch spectral_norm.

  `u` (output side) and `v` (input side) live in 'batch_stats' and start as
  independent normalised normal draws, as PyTorch's. With update_stats
  (training) one power iteration refreshes them; evaluation uses the stored
  pair unchanged, so sigma = v . K u exactly as PyTorch computes it from
  weight_u and weight_v (K = weight_orig transposed).
  """

  features: int
  epsilon: float = 1e-12
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, update_stats: bool):
    fan_in = x.shape[-1]
    kernel = self.param('kernel', torch_kernel_init, (fan_in, self.features))
    bias = self.param('bias', torch_bias_init(fan_in), (self.features,))
    normalize = functools.partial(_l2_normalize, epsilon=self.epsilon)
    u = self.variable('batch_stats', 'u', lambda: normalize(
        jax.random.normal(self.make_rng('params'), (self.features,))))
    v = self.variable('batch_stats', 'v', lambda: normalize(
        jax.random.normal(self.make_rng('params'), (fan_in,))))
    if update_stats:
      weight = jax.lax.stop_gradient(kernel)
      v.value = normalize(weight @ u.value)
      u.value = normalize(v.value @ weight)
    sigma = v.value @ kernel @ u.value  # the gradient flows through the kernel
    y = x.astype(self.dtype) @ (kernel / sigma).astype(self.dtype)
    return y + bias.astype(self.dtype)


class EncoderLayer(nn.Module):
  """torch.nn.TransformerEncoderLayer: post-norm, exact GELU, FF width 4d.

  A scan body: (x, None) -> (x, None).
  """

  config: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x, _):
    config = self.config
    width = x.shape[-1]
    norm = functools.partial(LayerNorm, epsilon=LAYER_NORM_EPSILON,
                             dtype=config.dtype)
    drop = Dropout(config.dropout, deterministic=self.deterministic)
    attended = MultiheadAttention(
        config.num_heads, config.attention_dropout, config.dtype,
        config.attention, config.remat != 'none', name='self_attn')(
            x, deterministic=self.deterministic)
    x = norm(name='norm1')(x + drop(attended))
    hidden = nn.gelu(linear(4 * width, width, dtype=config.dtype,
                            name='linear1')(x), approximate=False)
    hidden = linear(width, 4 * width, dtype=config.dtype,
                    name='linear2')(drop(hidden))
    return norm(name='norm2')(x + drop(hidden)), None


class CascadeStage(nn.Module):
  """Positions -> LayerNorm -> L encoder layers -> LayerNorm -> projection."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x, *, train: bool):
    """x [B, T, d] (d = 2D or 3D) -> [B, T, D] in the compute dtype."""
    config = self.config
    x = x + sinusoidal_positions(config.max_len, x.shape[-1])[:x.shape[1]]
    x = Dropout(config.dropout, deterministic=not train)(x)
    norm = functools.partial(LayerNorm, epsilon=LAYER_NORM_EPSILON,
                             dtype=config.dtype)
    x = norm(name='input_norm')(x)
    layer = EncoderLayer
    if config.remat == 'layers':  # keep matmul outputs, recompute the rest
      layer = nn.remat(EncoderLayer, prevent_cse=False, policy=LAYER_POLICY)
    # One compiled layer for all L: parameters and dropout draws per layer.
    layers = nn.scan(layer, variable_axes={'params': 0},
                     split_rngs={'params': True, 'dropout': True},
                     length=config.num_layers)
    x, _ = layers(config, not train, name='layers')(x, None)
    x = norm(name='post_norm')(x)
    return SpectralNormDense(config.latent_dim, dtype=config.dtype,
                             name='output_proj')(x, update_stats=train)


def copy_first_layers(params):
  """Every stage's encoder layers set to copies of its first one.

  torch.nn.TransformerEncoder deep-copies the one layer it is given, so in
  the original all layers of a stage start with equal weights.
  """
  first = lambda x: jnp.broadcast_to(x[:1], x.shape)
  return {name: dict(tree, layers=jax.tree.map(first, tree['layers']))
          if name.startswith('cascade_stages_') else tree
          for name, tree in params.items()}


def _is_parameter_tree(x) -> bool:
  return isinstance(x, dict) and any(
      str(name).startswith('cascade_stages_') for name in x)


def _map_stages(function, tree):
  """`function` applied to every stage of every parameter-shaped dict in
  `tree` (the parameters, AdamW's moments, a whole TrainState)."""
  def stages(params):
    return {name: function(value) if name.startswith('cascade_stages_')
            else value for name, value in params.items()}

  return jax.tree.map(lambda x: stages(x) if _is_parameter_tree(x) else x,
                      tree, is_leaf=_is_parameter_tree)


def unstack_layers(tree):
  """Each stage's `layers` (stacked on a leading axis) as `layers_0` ...
  `layers_{L-1}`, as PyTorch lists them, wherever `tree` holds parameters.
  """
  def stage(subtree):
    if 'layers' not in subtree:
      return subtree
    count = jax.tree.leaves(subtree['layers'])[0].shape[0]
    unstacked = {name: value for name, value in subtree.items()
                 if name != 'layers'}
    for layer in range(count):
      unstacked[f'layers_{layer}'] = jax.tree.map(lambda x: x[layer],
                                                  subtree['layers'])
    return unstacked

  return _map_stages(stage, tree)


def stack_layers(tree):
  """unstack_layers undone: `layers_{l}` stacked into `layers`."""
  def stage(subtree):
    names = sorted((name for name in subtree if name.startswith('layers_')),
                   key=lambda name: int(name.split('_')[1]))
    if not names:
      return subtree
    stacked = {name: value for name, value in subtree.items()
               if name not in names}
    stacked['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                     *[subtree[name] for name in names])
    return stacked

  return _map_stages(stage, tree)


@flax.struct.dataclass
class CascadeOutput:
  output: jax.Array  # [B, T, D] float32: the last stage's scaled output
  input_mask: jax.Array  # [B, T, D] float32; ones when nothing is masked
  target_mask: jax.Array  # [B, T, D] float32
  rms_scale: jax.Array  # [B, S], each stage's clipped output scale


class CascadeTransformer(nn.Module):
  """Masks the pair (creative agent or a fixed baseline), then S stages.

  The config's choices are checked by jingle_jax.config.run_config; the inputs
  here.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, inputs, targets, *, train: bool) -> CascadeOutput:
    """inputs, targets: float32 latents [B, T, D]."""
    config = self.config
    if inputs.shape != targets.shape:
      raise ValueError(f'inputs {inputs.shape} and targets {targets.shape} '
                       'differ in shape')
    if inputs.shape[1] > config.max_len:
      raise ValueError(f'{inputs.shape[1]} frames exceed max_len '
                       f'{config.max_len} of the positional table')
    if config.use_creative_agent:
      x, y, input_mask, target_mask = CreativeAgent(
          config, name='creative_agent')(inputs, targets, train=train)
    else:
      input_mask, target_mask = self._fixed_masks(inputs, targets, train)
      x, y = inputs * input_mask, targets * target_mask

    # The latents the stages receive (agent: masked and RMS-restored; fixed
    # baseline: masked; none: raw) set every stage's output RMS.
    reference_rms = jnp.sqrt((example_rms(x) ** 2 + example_rms(y) ** 2) / 2)
    noisy_x = self._anti_cheating_noise(x, train)  # once, shared by stages
    previous, scales = None, []
    for stage in range(config.num_stages):
      if previous is None:
        stage_input = jnp.concatenate([noisy_x, y], axis=-1)
        residual = (x + y) / 2
      else:
        stage_input = jnp.concatenate(
            [noisy_x, previous, self._anti_cheating_noise(y, train)], axis=-1)
        residual = (x + previous + y) / 3
      projected = CascadeStage(config, name=f'cascade_stages_{stage}')(
          stage_input, train=train)
      out = projected.astype(jnp.float32) + residual
      # Each stage's output is rescaled, and the next stage sees it scaled.
      scale = jnp.clip(reference_rms / (example_rms(out) + 1e-8),
                       *RMS_SCALE_RANGE)
      previous = out * scale[:, None, None]
      scales.append(scale)
    return CascadeOutput(previous, input_mask, target_mask,
                         jnp.stack(scales, axis=1))

  def _fixed_masks(self, inputs, targets, train):
    if self.config.fixed_masking == 'none':
      ones = jnp.ones_like(inputs)
      return ones, ones
    # Only `spectral` draws; evaluation uses a fixed draw to stay deterministic.
    key = self.make_rng('noise') if train else jax.random.key(0)
    return baselines.BASELINES[self.config.fixed_masking](inputs, targets,
                                                          key)

  def _anti_cheating_noise(self, x, train):
    """Training only: x + N(0, 1) * a * std(x), std over the whole batch."""
    if not train or self.config.anti_cheating == 0.0:
      return x
    noise = jax.random.normal(self.make_rng('noise'), x.shape, x.dtype)
    return x + noise * (self.config.anti_cheating * jnp.std(x, ddof=1))
