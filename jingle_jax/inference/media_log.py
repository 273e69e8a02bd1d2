"""What TensorBoard shows of a few validation pairs while training: their mask
pictures and, when the dataset has decoder weights, their input, target and
output decoded to audio (the original's users listened every few epochs).

The first config.media_pairs matched validation pairs, at every
config.media_every_evals-th validation. Every process runs the model on them
(its parameters are global arrays); process 0 draws, decodes and writes.
"""

from absl import logging
import jax
import numpy as np

from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import trained_model

CLIPS = ('input', 'target', 'output')


class ValidationMedia:
  """Mask pictures and audio of the first validation pairs, for RunLog."""

  def __init__(self, config, val_pairs, dataset: latents.LatentDataset,
               space, step_decoder=None):
    """space: the run's latent_space.LatentSpace; step_decoder: the train
    step's decoder (encodec_decoding.step_decoder), whose parameters are
    used instead of reading them again."""
    self.every = config.media_every_evals
    count = min(config.media_pairs, len(val_pairs))
    self.indices = np.arange(count)
    self.pairs = val_pairs
    self.batch = val_pairs.read(self.indices, self.indices) if count else None
    self.space = space
    self.run = trained_model.compiled_run(config.model)
    self.decoder_params = (None if step_decoder is None
                           else step_decoder.params)
    if count and jax.process_index() == 0 and self.decoder_params is None:
      try:
        self.decoder_params = encodec_decoding.read(dataset)
      except encodec_decoding.DecoderError as e:
        logging.warning('TensorBoard gets mask pictures, no audio: %s', e)

  def due(self, evaluations: int) -> bool:
    """Whether the evaluations-th validation of the run logs media."""
    return self.batch is not None and evaluations % self.every == 0

  def write(self, log, step: int, state) -> None:
    """Runs the model on the pairs and logs what it gives at `step`."""
    # pylint: disable-next=g-import-not-at-top
    from jingle_jax.inference import plots
    out, fault = self.run({'params': state.inference_params,
                           'batch_stats': state.batch_stats}, self.space,
                          self.batch['input'], self.batch['target'])
    if fault[0] >= 0:
      raise self.pairs.fault_error(fault, self.indices, self.indices)
    if jax.process_index() != 0:
      return
    arrays = {name: np.asarray(value) for name, value in out.items()}
    count = len(arrays['input'])
    for pair in range(count):
      log.image(step, f'val_pair_{pair}/masks', plots.mask_figure_array(
          *(arrays[name][pair] for name in (*CLIPS, 'input_mask',
                                            'target_mask'))))
    if self.decoder_params is None:
      return
    # All clips of all pairs in one call, at the clips' own length.
    raw = np.concatenate([self.space.denormalise(arrays[name])
                          for name in CLIPS])
    audio = np.asarray(encodec_decoding.compiled_decoder()(
        {'params': self.decoder_params}, raw))
    for index, samples in enumerate(audio):
      name, pair = CLIPS[index // count], index % count
      log.audio(step, f'val_pair_{pair}/{name}', samples,
                latents.SAMPLE_RATE)
