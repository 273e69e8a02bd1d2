"""Seed training recipe of the creative agent (DESIGN.md 5).

Every field, its default (the seed's value), comment and bounds are declared
once, in jingle_jax/config/run_config.py and jingle_jax/models/config.py;
this file is the recipe as they declare it.

The seed run's objective has no reconstruction term (w_in = w_tgt = 0): the
cascade learns from the adversarial term alone, the mask generator from it,
the mask regularisers and the balance term. It sees raw EnCodec latents, as
the original did.
"""

from jingle_jax.config import run_config


def get_config():
  return run_config.default_config()
