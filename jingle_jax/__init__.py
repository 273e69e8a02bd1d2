"""Jingle-JAX: the Jingle_D creative agent in JAX/Flax.

Importing the package imports neither torch nor jax: the training path is
torch-free, and numpy-only modules (the latent reader) stay light.
"""
