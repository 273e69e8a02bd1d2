"""Flax modules of Jingle-JAX."""

from jingle_jax.models.cascade import CascadeOutput
from jingle_jax.models.cascade import CascadeTransformer
from jingle_jax.models.config import ModelConfig
from jingle_jax.models.discriminator import LatentDiscriminator
from jingle_jax.models.layers import MultiheadAttention
from jingle_jax.models.mask_generator import AttentionMaskGenerator
from jingle_jax.models.mask_generator import CreativeAgent
from jingle_jax.models.style_discriminator import StyleDiscriminator

__all__ = [
    'AttentionMaskGenerator',
    'CascadeOutput',
    'CascadeTransformer',
    'CreativeAgent',
    'LatentDiscriminator',
    'ModelConfig',
    'MultiheadAttention',
    'StyleDiscriminator',
]
