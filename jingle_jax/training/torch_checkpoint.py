"""The original Jingle_D PyTorch checkpoint in this project's terms: its
keys, spectral-norm vectors and AdamW states mapped as DESIGN.md 7.1 lists.
Works on numpy arrays: no torch here.
"""

import collections
import dataclasses
import functools
import re

from absl import logging
import flax.traverse_util
import jax
import numpy as np

from jingle_jax.core import xla_options
from jingle_jax.models.cascade import sinusoidal_positions
from jingle_jax.models.cascade import stack_layers
from jingle_jax.models.cascade import unstack_layers
from jingle_jax.training import optimizers
from jingle_jax.training import train_step

_DDP_PREFIX = 'module.'
# The torch table is computed in float32: arguments up to 2000 rad carry
# rounding errors of about 1e-4.
_POSITIONS_TOLERANCE = 1e-3
_LATENT_DISCRIMINATOR_MODULES = {
    'conv_0': 'conv_layers.0', 'conv_1': 'conv_layers.3',
    'conv_2': 'conv_layers.6', 'conv_3': 'conv_layers.9',
    'hidden': 'classifier.0', 'logit': 'classifier.3'}


class ConversionError(ValueError):
  """The checkpoint does not fit the model; the message lists the keys."""


def strip_ddp_prefix(state_dict):
  """Drops the `module.` prefix when every key has it."""
  if state_dict and all(key.startswith(_DDP_PREFIX) for key in state_dict):
    return {key[len(_DDP_PREFIX):]: value for key, value in state_dict.items()}
  return dict(state_dict)


def _torch_module(path):
  """Flax module path -> PyTorch module name of the generator."""
  names, parent = [], ''
  for name in path:
    if match := re.fullmatch(r'cascade_stages_(\d+)', name):
      names += ['cascade_stages', match[1]]
    elif match := re.fullmatch(r'layers_(\d+)', name):
      in_stage = parent.startswith('cascade_stages_')
      names += (['transformer', 'layers'] if in_stage else []) + [match[1]]
    elif name == 'classifier' and parent == 'discriminator':
      names.append('classifier.2')
    else:
      names.append(name)
    parent = name
  return '.'.join(names)


def _torch_variable(collection, name):
  """(PyTorch variable name, whether its axes are reversed) of a leaf."""
  if collection == 'batch_stats':  # only the spectral norm has state
    return {'u': 'weight_u', 'v': 'weight_v'}[name], False
  if name == 'kernel':
    return 'weight', True
  if name == 'in_proj_kernel':
    return 'in_proj_weight', True
  return {'scale': 'weight'}.get(name, name), False


def _torch_key(collection, path, module_name):
  name, reversed_axes = _torch_variable(collection, path[-1])
  if name == 'weight' and path[-2] == 'output_proj':
    name = 'weight_orig'  # spectral_norm's raw weight
  return f'{module_name(path[:-1])}.{name}', reversed_axes


def _fill(abstract, state_dict, module_name, source, handled=()):
  """Variables shaped like `abstract` ({collection: tree}) from state_dict.

  Reversing all axes turns [out, in] into [in, out] and [out, in, k] into
  [k, in, out]. `handled` keys are read elsewhere but must be present.
  Raises ConversionError listing missing, unknown and misshaped keys at once.
  """
  flat, used, missing, misshaped = {}, set(handled), [], []
  for path, leaf in flax.traverse_util.flatten_dict(abstract).items():
    key, reversed_axes = _torch_key(path[0], path[1:], module_name)
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    value = np.asarray(state_dict[key], np.float32)
    expected = leaf.shape[::-1] if reversed_axes else leaf.shape
    if value.shape != tuple(expected):
      misshaped.append(f'{key}: {value.shape} in the checkpoint, '
                       f'{tuple(expected)} in the model')
    flat[path] = value.T if reversed_axes else value
  missing += [key for key in handled if key not in state_dict]
  unknown = sorted(set(state_dict) - used)
  problems = [f'{title}:\n    ' + '\n    '.join(keys) for title, keys in (
      ('missing keys', sorted(missing)), ('unknown keys', unknown),
      ('shapes that do not fit the config', misshaped)) if keys]
  if problems:
    raise ConversionError(f'{source}: ' + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def _architecture(config, state_dict, source):
  """A copy of the config with the architecture the keys describe."""
  stages = collections.defaultdict(lambda: -1)  # stage -> highest layer
  for key in state_dict:
    if match := re.match(r'cascade_stages\.(\d+)\.', key):
      layer = re.match(r'cascade_stages\.\d+\.transformer\.layers\.(\d+)\.',
                       key)
      stage = int(match[1])
      stages[stage] = max(stages[stage], int(layer[1]) if layer else -1)
  if not stages:
    raise ConversionError(f'{source}: no cascade_stages.* keys; not a Jingle_D '
                          'model_state_dict')
  # Gaps (a stage or layer without keys) show up as missing keys later.
  num_stages, num_layers = max(stages) + 1, max(stages.values()) + 1
  use_agent = any(key.startswith('creative_agent.') for key in state_dict)
  found = dict(num_stages=num_stages, num_layers=num_layers,
               use_creative_agent=use_agent)
  if use_agent:
    found['fixed_masking'] = 'none'
  positions = state_dict.get('cascade_stages.0.pos_encoding.pe')
  if positions is not None:
    found['max_len'] = int(np.shape(positions)[1])
  for field, value in found.items():
    if getattr(config.model, field) != value:
      logging.warning('%s: model.%s = %r from the checkpoint (config: %r)',
                      source, field, value, getattr(config.model, field))
  logging.info('%s: %d stages x %d layers, creative agent %s', source,
               num_stages, num_layers, 'on' if use_agent else 'off')
  return dataclasses.replace(
      config, model=dataclasses.replace(config.model, **found))


def _check_positions(state_dict, config, source):
  """The pos_encoding buffers must be the sinusoids the model computes."""
  for stage in range(config.model.num_stages):
    key = f'cascade_stages.{stage}.pos_encoding.pe'
    if key not in state_dict:
      continue  # reported as missing
    table = np.asarray(state_dict[key], np.float32)
    width = (2 if stage == 0 else 3) * config.model.latent_dim
    expected = sinusoidal_positions(config.model.max_len, width)[None]
    if table.shape != expected.shape:
      raise ConversionError(f'{source}: {key} has shape {table.shape}, the '
                            f'model needs {expected.shape}')
    error = float(np.max(np.abs(table - expected)))
    if error > _POSITIONS_TOLERANCE:
      raise ConversionError(
          f'{source}: {key} differs from the sinusoidal positions by up to '
          f'{error:.3g}; the model cannot reproduce it')


def convert(checkpoint, config, source='checkpoint', *, rng=None):
  """(config, TrainState) from an original checkpoint dict of arrays, and a
  run_config.Config whose architecture the checkpoint's keys override.

  The state has step 0 and the checkpoint's AdamW states where it has them;
  what the checkpoint does not hold (the GAN discriminator, an optimiser
  state) starts as a fresh run's would from `rng` (default: config.seed).
  """
  if 'model_state_dict' not in checkpoint:
    raise ConversionError(f'{source}: no model_state_dict; keys: '
                          f'{sorted(checkpoint)}')
  model_source = f'{source} model_state_dict'
  state_dict = strip_ddp_prefix(checkpoint['model_state_dict'])
  # The original saw raw EnCodec latents.
  config = _architecture(config, state_dict, model_source)
  config = dataclasses.replace(config, data=dataclasses.replace(
      config.data, normalise_latents=False))
  has_gan = 'discriminator_state_dict' in checkpoint
  if has_gan and config.loss.gan_weight == 0:
    raise ConversionError(
        f'{source} has GAN discriminator weights but the config sets '
        'loss.gan_weight = 0; pass --config.loss.gan_weight')
  # Filled in PyTorch's layout of the layers, stacked for the scan at the end.
  state = unstack_layers(xla_options.jit(functools.partial(
      train_step.create_train_state, config))(
          jax.random.key(config.seed) if rng is None else rng))
  positions = [f'cascade_stages.{stage}.pos_encoding.pe'
               for stage in range(config.model.num_stages)]
  variables = _fill({'params': state.params, 'batch_stats': state.batch_stats},
                    state_dict, _torch_module, model_source, positions)
  _check_positions(state_dict, config, model_source)
  optim = config.optim
  moments = _moments(checkpoint, 'optimizer_state_dict', state_dict,
                     _torch_module, variables['params'],
                     (optim.learning_rate, (0.9, 0.999), optim.weight_decay),
                     source)
  state = state.replace(params=variables['params'],
                        batch_stats=variables['batch_stats'])
  state, disc_moments = _discriminator(checkpoint, state, config, source)
  # The optimisers' flat arrays follow the stacked parameters' order.
  state = stack_layers(state)
  if config.optim.ema_decay:  # the average starts at the original's weights
    state = state.replace(ema_params=state.params)
  tx, disc_tx = optimizers.make_optimizers(optim)
  for name, tx, params, found in (
      ('opt_state', tx, state.params, moments),
      ('disc_opt_state', disc_tx, state.disc_params, disc_moments)):
    if found is not None:
      count, mu, nu = found
      state = state.replace(**{name: optimizers.with_moments(
          tx, params, count, *stack_layers((mu, nu)))})
  return config, jax.device_put(state)


def _discriminator(checkpoint, state, config, source):
  """(state with the GAN discriminator's weights, its AdamW moments or None)
  from the checkpoint's discriminator_state_dict, when it has one."""
  if 'discriminator_state_dict' not in checkpoint:
    logging.info('%s: no discriminator_state_dict; the GAN discriminator '
                 'starts fresh', source)
    return state, None
  disc_state_dict = strip_ddp_prefix(checkpoint['discriminator_state_dict'])
  disc_module = lambda path: _LATENT_DISCRIMINATOR_MODULES[path[0]]
  disc_params = _fill(
      {'params': state.disc_params}, disc_state_dict, disc_module,
      f'{source} discriminator_state_dict')['params']
  optim = config.optim
  return state.replace(disc_params=disc_params), _moments(
      checkpoint, 'disc_optimizer_state_dict', disc_state_dict, disc_module,
      disc_params, (optim.disc_learning_rate, (optim.disc_b1, optim.disc_b2),
                    optim.disc_weight_decay), source)


def _moments(checkpoint, name, state_dict, module_name, params,
             hyperparameters, source):
  """(step count, exp_avg, exp_avg_sq) of the checkpoint's torch AdamW state
  `name`, the moments as trees shaped like `params`; None when it has none
  (that state starts fresh).

  The config's (learning rate, betas, weight decay) `hyperparameters` apply
  from here on; the log says where the checkpoint's differ.
  """
  if name not in checkpoint:
    logging.info('%s: no %s; that AdamW state starts fresh', source, name)
    return None
  source = f'{source} {name}'
  optimizer = checkpoint[name]
  groups = optimizer.get('param_groups', [])
  indices = [index for group in groups for index in group['params']]
  keys = _parameter_keys(params, module_name, state_dict)
  if len(indices) != len(keys):
    raise ConversionError(f'{source}: {len(indices)} parameters, the model '
                          f'has {len(keys)}')
  for group in groups:
    group_values = (group.get('lr'), tuple(group.get('betas', ())),
                    group.get('weight_decay'))
    if group_values != hyperparameters:
      logging.warning('%s: (lr, betas, weight_decay) = %s; the config has %s',
                      source, group_values, hyperparameters)
  moments = {'exp_avg': {}, 'exp_avg_sq': {}}
  steps = {}
  for index, key in zip(indices, keys):
    entry = optimizer['state'].get(index)
    if entry is None:  # no gradient yet (e.g. the style discriminator)
      for moment in moments.values():
        moment[key] = np.zeros_like(state_dict[key])
      continue
    for field in ('step', *moments):
      if field not in entry:
        raise ConversionError(f'{source}: state[{index}] ({key}) has no '
                              f'{field!r}; not an AdamW state')
    for moment_name, moment in moments.items():
      moment[key] = entry[moment_name]
    steps[key] = int(entry['step'])
  if len(set(steps.values())) > 1:
    first, last = min(steps, key=steps.get), max(steps, key=steps.get)
    raise ConversionError(f'{source}: parameters were stepped unequally '
                          f'({first}: {steps[first]}, {last}: {steps[last]})')
  mu, nu = (_fill({'params': params}, moment, module_name,
                  f'{source} {moment_name}')['params']
            for moment_name, moment in moments.items())
  return max(steps.values(), default=0), mu, nu


def _parameter_keys(params, module_name, state_dict):
  """The torch keys of `params` in module.parameters() order.

  That is the state dict's order less its buffers; a parameter missing from
  the state dict was reported when the weights were read.
  """
  keys = {_torch_key('params', path, module_name)[0]
          for path in flax.traverse_util.flatten_dict(params)}
  return [key for key in state_dict if key in keys]
