"""JAX's persistent compilation cache, where config.compilation_cache says."""

import os

import jax
import jax.numpy as jnp
import pytest

from jingle_jax.core import compile_cache


def test_folder_follows_the_setting_and_the_environment(monkeypatch,
                                                        tmp_path):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax'))
  assert compile_cache.folder('auto') == str(tmp_path / 'jax')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.folder('auto') == str(tmp_path / 'xdg' / 'jingle_jax'
                                             / 'jax')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compile_cache.folder('auto') == str(
      tmp_path / 'home' / '.cache' / 'jingle_jax' / 'jax')
  assert compile_cache.folder('~/cache') == str(tmp_path / 'home' / 'cache')
  assert compile_cache.folder('') is None


@pytest.fixture
def every_compilation_kept():
  """Keeps even fast compilations; the session's cache again afterwards."""
  threshold = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  yield
  jax.config.update('jax_persistent_cache_min_compile_time_secs', threshold)
  compile_cache.use('auto')  # conftest's JAX_COMPILATION_CACHE_DIR


def test_compilations_are_kept_and_loaded(tmp_path, every_compilation_kept):
  del every_compilation_kept
  assert compile_cache.use(str(tmp_path / 'cache')) == str(tmp_path / 'cache')
  jax.jit(lambda x: jnp.sin(x) * 3)(jnp.arange(5.0)).block_until_ready()
  kept = os.listdir(tmp_path / 'cache')
  assert kept
  jax.clear_caches()  # what a new process starts with
  jax.jit(lambda x: jnp.sin(x) * 3)(jnp.arange(5.0)).block_until_ready()
  assert sorted(os.listdir(tmp_path / 'cache')) == sorted(kept)  # loaded
  assert compile_cache.use('') is None
  jax.jit(lambda x: jnp.cos(x) * 3)(jnp.arange(5.0)).block_until_ready()
  assert sorted(os.listdir(tmp_path / 'cache')) == sorted(kept)  # off
