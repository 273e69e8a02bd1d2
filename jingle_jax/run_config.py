"""A run's config: checked in one place, brought up to date when recorded by
an older version, and the model's frozen view of it.

configs/*.py define the fields, each with a comment. Training checks the
whole config (check_training); whatever builds a model checks the model's
fields (model_config).
"""

import copy

import jax
import jax.numpy as jnp
import ml_collections

from jingle_jax import baselines
from jingle_jax.models import attention
from jingle_jax.models import ModelConfig
from jingle_jax.models.config import REMAT_CHOICES

_POSITIVE = ('per_device_batch_size', 'num_frames', 'num_epochs',
             'log_every_steps', 'checkpoint_every_epochs', 'keep_checkpoints',
             'max_consecutive_skips', 'prefetch_batches', 'media_every_evals')
_POSITIVE_OR_PER_EPOCH = ('num_train_steps', 'eval_every_steps',
                          'checkpoint_every_steps')  # -1: follows epochs
_NOT_NEGATIVE = ('window_hop', 'early_stopping_patience', 'media_pairs')
_POSITIVE_MODEL = ('latent_dim', 'num_stages', 'num_layers', 'num_heads',
                   'mask_hidden', 'mask_heads', 'max_len')
# Fields added since configs were first recorded in workdirs, with the value
# that a run recorded without them had.
_ADDED_FIELDS = (
    ('normalise_latents', True),
    ('model.remat', 'none'),
    ('model.disc_dropout', 0.3),
    ('loss.overlap_weight', 10.0),
    ('loss.coverage_weight', 0.5),
    ('loss.temporal_weight', 5.0),
    ('optim.disc_b1', 0.9),
    ('optim.disc_b2', 0.999),
    ('media_pairs', 0),
    ('media_every_evals', 1),
    ('loss.audio_input_weight', 0.0),
    ('loss.audio_target_weight', 0.0),
    ('loss.stft_weight', 0.0),
    ('loss.mel_weight', 0.0),
    ('loss.correlation_weight', 0.0),
    ('loss.spectral_outlier_weight', 0.0),
    ('model.attention_impl', 'auto'),
    ('compilation_cache', 'auto'),
)


class ConfigError(ValueError):
  """A config that cannot run; the message names the field."""


def upgrade(config) -> ml_collections.ConfigDict:
  """A copy of a recorded config with the fields added since filled in."""
  config = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  for name, value in _ADDED_FIELDS:
    *parents, field = name.split('.')
    block = config
    for parent in parents:
      block = block[parent]
    if field not in block:
      block[field] = value
  return config


def compute_dtype(name: str):
  """config.model.compute_dtype: 'auto' is float32 on CPU, else bfloat16."""
  if name == 'auto':
    return jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
  if name not in ('float32', 'bfloat16'):
    raise ConfigError('config.model.compute_dtype must be auto, float32 or '
                      f'bfloat16, not {name!r}')
  return jnp.dtype(name)


def attention_implementation(name: str) -> str:
  """config.model.attention_impl: 'auto' is 'fused' on GPU, else 'xla'."""
  if name == 'auto':
    return 'fused' if jax.default_backend() == 'gpu' else 'xla'
  if name not in attention.IMPLEMENTATIONS:
    raise ConfigError('config.model.attention_impl must be auto or one of '
                      f'{attention.IMPLEMENTATIONS}, not {name!r}')
  return name


def model_config(config) -> ModelConfig:
  """The model's hyperparameters from config.model, checked."""
  m = config.model
  for name in _POSITIVE_MODEL:
    if m[name] < 1:
      raise ConfigError(f'config.model.{name} must be at least 1, not '
                        f'{m[name]}')
  if m.remat not in REMAT_CHOICES:
    raise ConfigError(f'config.model.remat is {m.remat!r}, not one of '
                      f'{REMAT_CHOICES}')
  if m.fixed_masking not in ('none', *baselines.BASELINES):
    raise ConfigError(f'config.model.fixed_masking is {m.fixed_masking!r}, '
                      f'not none or one of {sorted(baselines.BASELINES)}')
  if m.use_creative_agent and m.fixed_masking != 'none':
    raise ConfigError('config.model.fixed_masking needs '
                      'config.model.use_creative_agent=False')
  return ModelConfig(
      latent_dim=m.latent_dim, num_stages=m.num_stages,
      num_layers=m.num_layers, num_heads=m.num_heads, dropout=m.dropout,
      attention_dropout=m.attention_dropout, anti_cheating=m.anti_cheating,
      use_creative_agent=m.use_creative_agent, fixed_masking=m.fixed_masking,
      hard_masks=m.hard_masks, mask_hidden=m.mask_hidden,
      mask_heads=m.mask_heads, max_len=m.max_len,
      dtype=compute_dtype(m.compute_dtype), remat=m.remat,
      attention=attention_implementation(m.attention_impl))


def check_training(config, workdir) -> None:
  """Refuses values a training run cannot run with, naming the field."""
  for name in _POSITIVE:
    if config[name] < 1:
      raise ConfigError(f'config.{name} must be at least 1, not '
                        f'{config[name]}')
  for name in _POSITIVE_OR_PER_EPOCH:
    if config[name] < 1 and config[name] != -1:
      raise ConfigError(f'config.{name} must be -1 or at least 1, not '
                        f'{config[name]}')
  for name in _NOT_NEGATIVE:
    if config[name] < 0:
      raise ConfigError(f'config.{name} must not be negative')
  model_config(config)
  if config.num_frames > config.model.max_len:
    raise ConfigError(f'config.num_frames ({config.num_frames}) exceeds '
                      f'config.model.max_len ({config.model.max_len})')
  if not config.data_dir:
    raise ConfigError('config.data_dir is empty: set it to the output of '
                      'precompute.encode (--config.data_dir=DIR)')
  if not workdir:
    raise ConfigError('no workdir: pass --workdir or set config.workdir')
