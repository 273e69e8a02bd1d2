"""The model's hyperparameters, one frozen value passed to every module.

jingle_jax.run_config makes it from a run's config (`config.model`).
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

REMAT_CHOICES = ('none', 'attention', 'layers')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  latent_dim: int = 128  # EnCodec latent channels D
  num_stages: int = 3  # cascade stages (stage 0 d = 2D, later ones d = 3D)
  num_layers: int = 6  # encoder layers per stage
  num_heads: int = 8  # attention heads of the cascade
  dropout: float = 0.1  # after positions, attention and feed-forward
  attention_dropout: float = 0.1  # on attention weights
  anti_cheating: float = 0.9  # training noise, in units of std(x)
  use_creative_agent: bool = True  # learned masks; else fixed_masking
  fixed_masking: str = 'none'  # none or a key of baselines.BASELINES
  hard_masks: bool = False  # Gumbel straight-through binary masks
  mask_hidden: int = 256  # hidden width H of the mask generator
  mask_heads: int = 4  # heads of its cross-attention
  max_len: int = 2000  # frames of the sinusoidal position table
  dtype: Any = jnp.float32  # compute dtype (parameters stay float32)
  # What the backward pass recomputes instead of storing: 'none'; the
  # attention weights ('attention', O(T) instead of O(T^2) memory); or also
  # all but the matmul outputs of each encoder layer ('layers').
  remat: str = 'none'
  # How attention is computed (models/attention.py): 'xla' materialises the
  # weights; 'fused' runs the Pallas kernels.
  attention: str = 'xla'
