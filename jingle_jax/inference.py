"""A trained model, loaded from a training workdir and run batch by batch.

sample, evaluate and jingle_jax.arrange run what TrainedModel.load gives;
convert_torch writes workdirs it loads.
"""

import dataclasses
import functools

import jax
import numpy as np

from jingle_jax import baselines
from jingle_jax import checkpoints
from jingle_jax import compile_cache
from jingle_jax import input_pipeline
from jingle_jax import latents
from jingle_jax import run_config
from jingle_jax.models import CascadeTransformer

# What TrainedModel.with_masking runs: the trained agent, no masks, or a
# fixed baseline (DESIGN.md 4.6) in front of the trained cascade.
MASKINGS = ('creative_agent', 'none') + tuple(baselines.BASELINES)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: run_config.Config  # the run's, as recorded
  variables: dict  # {'params', 'batch_stats'}
  step: int  # the checkpoint's step: its name, the logs' step
  updates: int  # updates applied by then (skipped steps do not count)
  normaliser: input_pipeline.Normaliser  # raw latents <-> the model's

  @classmethod
  def load(cls, workdir, which='best', *, dataset=None) -> 'TrainedModel':
    """The checkpoint `which` (best, latest or a step) of a workdir.

    `dataset` (a LatentDataset; by default the run's, read only when needed)
    gives the latent statistics when the run normalises latents.
    """
    config = run_config.read(workdir)
    compile_cache.use(config.compilation_cache)
    manager = checkpoints.open_manager(workdir, config, read_only=True)
    try:
      state, extras = checkpoints.restore(manager, config, which)
    finally:
      manager.close()
    if config.normalise_latents and dataset is None:
      dataset = latents.LatentDataset(config.data_dir)
    return cls(config, {'params': state.params,
                        'batch_stats': state.batch_stats},
               extras['data_position'], extras['step'],
               input_pipeline.Normaliser.for_config(config, dataset))

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

  def run(self, inputs, targets, batch_size: int = 8):
    """The model in evaluation mode on pairs [N, T, D] in its space.

    Returns numpy (output, input_mask, target_mask), each [N, T, D].
    """
    apply = compiled_apply(self.config.model)
    parts = []
    for indices, count in input_pipeline.padded_batches(
        len(inputs), min(batch_size, len(inputs))):
      out = apply(self.variables, inputs[indices], targets[indices])
      parts.append([np.asarray(x)[:count] for x in
                    (out.output, out.input_mask, out.target_mask)])
    return [np.concatenate(arrays) for arrays in zip(*parts)]


def run_dataset(workdir, data_dir=None) -> latents.LatentDataset:
  """The latent dataset at data_dir, by default the one the run trained on."""
  return latents.LatentDataset(
      data_dir or run_config.read(workdir).data_dir)


@functools.cache
def compiled_apply(model_config):
  """The model's jitted evaluation apply, one per model config."""
  return jax.jit(functools.partial(CascadeTransformer(model_config).apply,
                                   train=False))
