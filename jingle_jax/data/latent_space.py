"""Raw latents as the dataset stores them -> the model's inputs, on device.

Batches leave the host in the dataset's dtype (float16); the compiled steps
convert them, check their values and normalise them, so that the host only
copies bytes. The check is latents.check_values's: a value that is not
finite, or lies OUTLIER_STDS (in units of the dataset's outlier_scale) from
the training mean, is a fault. A step reports the first one as (window,
element): window w < B is the input clip of row w, B + w the target clip of
row w; element = frame x D + channel within the clip. The host names the
shard, song, frame and channel from that (input_pipeline.Pairs.fault_error).
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jingle_jax.data import latents

NO_FAULT = (-1, -1)


class LatentSpace(flax.struct.PyTreeNode):
  """Normalisation (x - mean) / std into the model's space, and the check.

  All fields [D] float32. Raw latents (the seed recipe): mean 0, std 1.
  Without a dataset to check against: check_mean 0, check_scale inf, so
  that only non-finite values are faults.
  """
  mean: jax.Array
  std: jax.Array
  check_mean: jax.Array
  check_scale: jax.Array

  @classmethod
  def of(cls, normalise: bool, dataset=None,
         dim: int = latents.LATENT_DIM) -> 'LatentSpace':
    """The dataset's statistics (normalise) or raw latents, checked against
    the dataset when there is one."""
    zeros, ones = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    if normalise and dataset is None:
      raise ValueError('normalised latents need the dataset\'s statistics')
    return cls(
        mean=dataset.mean if normalise else zeros,
        std=dataset.std if normalise else ones,
        check_mean=zeros if dataset is None else dataset.mean,
        check_scale=(np.full(dim, np.inf, np.float32) if dataset is None
                     else latents.outlier_scale(dataset.std)))

  def normalise(self, raw):
    return (raw.astype(jnp.float32) - self.mean) / self.std

  def denormalise(self, x):
    return x.astype(jnp.float32) * self.std + self.mean

  def _first_faults(self, raw):
    """(whether each clip of [B, T, D] holds a fault, its first element)."""
    deviation = jnp.abs(raw.astype(jnp.float32) - self.check_mean)
    bad = ~(deviation / self.check_scale <= latents.OUTLIER_STDS)
    bad = bad.reshape(len(raw), -1)
    return bad.any(axis=1), jnp.argmax(bad, axis=1).astype(jnp.int32)

  def fault(self, inputs, targets) -> jax.Array:
    """int32 [2]: (window, element) of the first fault, or NO_FAULT."""
    faulty, elements = (jnp.concatenate(parts) for parts in zip(
        self._first_faults(inputs), self._first_faults(targets)))
    window = jnp.argmax(faulty).astype(jnp.int32)
    return jnp.where(faulty.any(), jnp.stack([window, elements[window]]),
                     jnp.asarray(NO_FAULT, jnp.int32))

  def prepare(self, batch):
    """(batch with 'input' and 'target' normalised float32, fault)."""
    fault = self.fault(batch['input'], batch['target'])
    return dict(batch, input=self.normalise(batch['input']),
                target=self.normalise(batch['target'])), fault


def identity(dim: int = latents.LATENT_DIM) -> LatentSpace:
  """Raw latents, only non-finite values checked (tests, given clips)."""
  return LatentSpace.of(False, None, dim)
