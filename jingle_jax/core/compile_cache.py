"""JAX's persistent compilation cache, so that a repeated or resumed run
loads its compiled steps (and, on GPU, XLA's autotuning results) instead of
compiling them again.

config.compilation_cache sets it: 'auto' is $JAX_COMPILATION_CACHE_DIR
when set, else $XDG_CACHE_HOME/jingle_jax/jax (~/.cache/jingle_jax/jax);
a folder; or '' for none. Programs that compile in under a second (JAX's
jax_persistent_cache_min_compile_time_secs) are not kept.
"""

import os

import jax
from jax.experimental.compilation_cache import compilation_cache


def folder(setting: str) -> str | None:
  """The cache folder config.compilation_cache names, or None (off)."""
  if setting != 'auto':
    return os.path.expanduser(setting) or None
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser(
      '~/.cache')
  return os.path.join(cache_home, 'jingle_jax', 'jax')


def use(setting: str) -> str | None:
  """Points JAX's persistent cache at folder(setting); returns the folder.

  Takes effect for the compilations after it, whatever came before.
  """
  path = folder(setting)
  jax.config.update('jax_enable_compilation_cache', path is not None)
  compilation_cache.set_cache_dir(path)
  compilation_cache.reset_cache()
  return path
