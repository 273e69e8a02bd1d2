"""The model's part of the config (`config.model`): one frozen value passed
to every module. Its defaults are the seed model's (DESIGN.md 4)."""

import dataclasses

import jax
import jax.numpy as jnp

from jingle_jax.config.fields import field
from jingle_jax.data import manifest
from jingle_jax.models import attention
from jingle_jax.models import baselines

REMAT_CHOICES = ('none', 'attention', 'layers')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  # Cascade stages (stage 0 d=2D, later stages d=3D).
  num_stages: int = field(3, minimum=1, changes_checkpoints=True)
  # Transformer encoder layers per stage.
  num_layers: int = field(6, minimum=1, changes_checkpoints=True)
  # Attention heads in the cascade.
  num_heads: int = field(8, minimum=1, changes_checkpoints=True)
  # Latent channels D: EnCodec's, as the datasets store them (smaller only
  # for tests of the model alone).
  latent_dim: int = field(manifest.LATENT_DIM, minimum=1,
                          changes_checkpoints=True)
  # Dropout after positions, attention and feed-forward.
  dropout: float = field(0.1, minimum=0.0)
  # Dropout on attention weights (training).
  attention_dropout: float = field(0.1, minimum=0.0)
  # Training noise scale a, in units of std(x).
  anti_cheating: float = field(0.9, minimum=0.0)
  # Learned masks; False: fixed_masking.
  use_creative_agent: bool = field(True, changes_checkpoints=True)
  # Agent off: none or temporal|frequency|spectral|energy|hybrid masks.
  fixed_masking: str = field('none', choices=('none', *baselines.BASELINES),
                             changes_checkpoints=True)
  # Gumbel straight-through binary masks.
  hard_masks: bool = field(False, changes_checkpoints=True)
  # Hidden width H of the mask generator.
  mask_hidden: int = field(256, minimum=1, changes_checkpoints=True)
  # Heads of the mask generator's cross-attention.
  mask_heads: int = field(4, minimum=1, changes_checkpoints=True)
  # Frames covered by the sinusoidal position table.
  max_len: int = field(2000, minimum=1)
  # auto: float32 on CPU, bfloat16 on GPU/TPU (parameters stay float32).
  compute_dtype: str = field('auto', choices=('auto', 'float32', 'bfloat16'))
  # Recomputed in the backward pass instead of stored: none, attention (the
  # attention weights: O(T) instead of O(T^2) memory per layer) or layers
  # (also all but each layer's matmul outputs).
  remat: str = field('layers', choices=REMAT_CHOICES,
                     recorded_before='none')
  # Attention: xla (the weights materialised; cuDNN's fused attention where
  # nothing is dropped), fused (Pallas kernels: the weights, dropout
  # included, never leave the chip; interpreted, slowly, off GPU) or auto
  # (fused on GPU, xla elsewhere).
  attention_impl: str = field('auto',
                              choices=('auto', *attention.IMPLEMENTATIONS),
                              recorded_before='auto')
  # Dropout in the GAN latent discriminator.
  disc_dropout: float = field(0.3, minimum=0.0, recorded_before=0.3)

  @property
  def dtype(self):
    """The compute dtype, 'auto' resolved for this backend."""
    if self.compute_dtype == 'auto':
      return jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
    return jnp.dtype(self.compute_dtype)

  @property
  def attention(self) -> str:
    """The attention implementation, 'auto' resolved for this backend."""
    if self.attention_impl == 'auto':
      return 'fused' if jax.default_backend() == 'gpu' else 'xla'
    return self.attention_impl
