"""A trained model, loaded from a training workdir and run batch by batch.

sample, evaluate and jingle_jax.arrange run what TrainedModel.load gives;
convert_torch writes workdirs it loads.
"""

import dataclasses
import functools

import numpy as np

from jingle_jax.config import run_config
from jingle_jax.core import compile_cache
from jingle_jax.core import xla_options
from jingle_jax.data import input_pipeline
from jingle_jax.data import latent_space
from jingle_jax.data import latents
from jingle_jax.models import baselines
from jingle_jax.models import CascadeTransformer
from jingle_jax.training import run_dir

# What TrainedModel.with_masking runs: the trained agent, no masks, or a
# fixed baseline (DESIGN.md 4.6) in front of the trained cascade.
MASKINGS = ('creative_agent', 'none') + tuple(baselines.BASELINES)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: run_config.Config  # the run's, as recorded
  variables: dict  # {'params', 'batch_stats'}
  step: int  # the checkpoint's step: its name, the logs' step
  updates: int  # updates applied by then (skipped steps do not count)
  space: latent_space.LatentSpace  # raw latents <-> the model's, checked

  @classmethod
  def load(cls, workdir, which='best', *, dataset=None) -> 'TrainedModel':
    """The checkpoint `which` (best, latest or a step) of a workdir.

    `dataset` (a LatentDataset; by default the run's, read only when the
    run normalises latents) gives the latent statistics, and the bounds
    latents read from it are checked against.
    """
    config, state, extras = run_dir.load(workdir, which)
    compile_cache.use(config.compilation_cache)
    if config.data.normalise_latents and dataset is None:
      dataset = latents.LatentDataset(config.data.dir)
    return cls(config, {'params': state.inference_params,
                        'batch_stats': state.batch_stats},
               extras.data_position, extras.updates,
               latent_space.LatentSpace.of(config.data.normalise_latents,
                                           dataset, config.model.latent_dim))

  def with_masking(self, masking: str) -> 'TrainedModel':
    """The trained cascade behind another masking (one of MASKINGS).

    A fixed baseline runs what the agent-off model computes (the fixed masks
    applied without RMS restoration), with the agent's cascade weights.
    """
    if masking not in MASKINGS:
      raise ValueError(f'unknown masking {masking!r}; one of {MASKINGS}')
    if not self.config.model.use_creative_agent:
      raise ValueError('the checkpoint has no creative agent '
                       '(config.model.use_creative_agent is False)')
    if masking == 'creative_agent':
      return self
    config = dataclasses.replace(self.config, model=dataclasses.replace(
        self.config.model, use_creative_agent=False, fixed_masking=masking))
    params = {name: tree for name, tree in self.variables['params'].items()
              if name != 'creative_agent'}
    return dataclasses.replace(self, config=config,
                               variables=dict(self.variables, params=params))

  def run(self, inputs, targets, batch_size: int = 8,
          fault_error=None) -> dict[str, np.ndarray]:
    """The model in evaluation mode on raw latent pairs [N, T, D], in the
    dtype they are stored in.

    Returns {'input', 'target'} (in the model's space), 'output',
    'input_mask' and 'target_mask', each numpy [N, T, D]. A fault in the
    latents (latent_space: window w < N the input of pair w, N + w its
    target) raises fault_error(fault), by default a LatentDataError that
    names the pair.
    """
    apply = compiled_run(self.config.model)
    parts, count = [], len(inputs)
    for indices, used in input_pipeline.padded_batches(
        count, min(batch_size, count)):
      out, fault = apply(self.variables, self.space, inputs[indices],
                         targets[indices])
      window, element = (int(x) for x in fault)
      if window >= 0:
        size = len(indices)
        window = (indices[window] if window < size else
                  count + indices[window - size])
        raise (fault_error or functools.partial(
            _fault_error, count=count, dim=inputs.shape[-1]))(
            np.array([window, element]))
      parts.append({name: np.asarray(x)[:used] for name, x in out.items()})
    return {name: np.concatenate([part[name] for part in parts])
            for name in parts[0]}

  def run_pair(self, raw_input, raw_target) -> dict[str, np.ndarray]:
    """run() on one pair of raw clips [frames, D]: input, target, output
    (in the model's space) and the masks, each [frames, D]."""
    run = self.run(raw_input[None], raw_target[None])
    return {name: values[0] for name, values in run.items()}


def _fault_error(fault, count: int, dim: int) -> latents.LatentDataError:
  """A fault of TrainedModel.run's `count` pairs, named by pair and clip."""
  window, element = (int(x) for x in fault)
  frame, channel = divmod(element, dim)
  clip = 'input' if window < count else 'target'
  return latents.LatentDataError(
      f'pair {window % count}, {clip} clip: frame {frame}, channel {channel} '
      'is not finite or out of the dataset\'s bounds')


def run_dataset(workdir, data_dir=None) -> latents.LatentDataset:
  """The latent dataset at data_dir, by default the one the run trained on."""
  return latents.LatentDataset(
      data_dir or run_dir.read_config(workdir).data.dir)


@functools.cache
def compiled_run(model_config):
  """jit(variables, space, raw inputs, raw targets) -> ({'input', 'target'
  (normalised), 'output', 'input_mask', 'target_mask'}, fault), one per
  model config."""
  model = CascadeTransformer(model_config)

  def run(variables, space, inputs, targets):
    batch, fault = space.prepare({'input': inputs, 'target': targets})
    out = model.apply(variables, batch['input'], batch['target'], train=False)
    return {'input': batch['input'], 'target': batch['target'],
            'output': out.output, 'input_mask': out.input_mask,
            'target_mask': out.target_mask}, fault

  return xla_options.jit(run)
