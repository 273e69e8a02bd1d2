"""Arranges two songs with a trained model, from audio files to audio.

  python -m jingle_jax.arrange --workdir W --input A.mp3 --target B.wav \
      --out OUT.wav [--input-start S] [--target-start S] \
      [--checkpoint best|latest|STEP] [--data-dir LATENTS] \
      [--encodec-checkpoint PATH | --random-encodec SEED] [--device auto]

Takes one clip of the run's length (config.num_frames: 16 s for the seed
recipe) from each file, from its start second, encodes both with the EnCodec
weights of the run's latent dataset (weights whose identity differs from its
manifest's are refused), runs the trained model and decodes its output to
OUT.wav (24 kHz mono). OUT.png shows the masks over the loudness envelopes;
OUT.html, a page to open offline, plays the two clips (OUT.input.wav,
OUT.target.wav) and the output beside the masks.
A run without a latent dataset (a converted checkpoint) encodes with the
weights given, the pretrained EnCodec by default, unchecked.

EnCodec runs as the dataset was encoded: a dataset of precompute.encode
--encoder jax is arranged by EnCodec's encoder and decoder in JAX, with the
converted weights it keeps (LATENTS/encodec_jax.msgpack), and torch is
never loaded; otherwise by PyTorch's (precompute/), imported when arranging
only, so that importing jingle_jax never loads torch.
"""

import collections
import functools
import os

from absl import flags
from absl import logging
import numpy as np

from jingle_jax import cli
from jingle_jax.data import audio
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import encodec_encoding
from jingle_jax.inference import report
from jingle_jax.inference import samples
from jingle_jax.inference import trained_model
from jingle_jax.inference import wav_files
from jingle_jax.training import run_dir


def read_clip(path, flag: str, start: float, seconds: float) -> np.ndarray:
  """`seconds` of mono 24 kHz audio of the file from `start` seconds."""
  try:
    clip = np.concatenate(
        [np.zeros(0, np.float32),
         *audio.MonoStream(path, start=start, seconds=seconds)])
  except (audio.BadAudio, OSError, RuntimeError) as e:  # soundfile's too
    raise ValueError(f'{flag} {path}: {e}') from None
  if len(clip) < round(seconds * latents.SAMPLE_RATE):
    raise ValueError(f'{flag} {path}: {len(clip) / latents.SAMPLE_RATE:.2f} '
                     f's from {start:g} s; the model\'s clips are '
                     f'{seconds:g} s')
  return clip


def encodec_model(dataset, checkpoint, random_seed):
  """(model, identity) of the EnCodec weights the run's latent dataset (or
  None) records."""
  # pylint: disable=g-import-not-at-top
  from precompute import encodec_weights
  if dataset is None:
    logging.warning('the run records no latent dataset (config.data.dir): '
                    'the EnCodec weights given are not checked against one')
    return encodec_weights.load(checkpoint, random_seed)
  return (encodec_weights.matching_weights(dataset, checkpoint, random_seed),
          dataset.manifest.encodec_weights)


class _JaxCodec:
  """EnCodec's encoder and decoder in JAX, with the converted weights a
  dataset encoded by them keeps."""

  def __init__(self, dataset, checkpoint, random_seed):
    if checkpoint is not None or random_seed is not None:
      raise ValueError(f'{dataset.manifest_path} was encoded by EnCodec\'s '
                       'JAX encoder with the weights it keeps: drop '
                       '--encodec-checkpoint and --random-encodec')
    path = os.path.join(os.path.dirname(dataset.manifest_path),
                        encodec_encoding.WEIGHTS_FILE)
    converted = encodec_encoding.read_weights(path)
    if converted['encodec_weights'] != dataset.manifest.encodec_weights:
      raise ValueError(f'{path} holds EnCodec weights '
                       f'{converted["encodec_weights"]}, the dataset\'s are '
                       f'{dataset.manifest.encodec_weights}')
    self.weights = converted['encodec_weights']
    self._encoder = encodec_encoding.JaxEncoder(converted['encoder'])
    self._decoder = converted['decoder']

  def encode(self, clip):
    return np.concatenate(list(self._encoder.encode([clip])))

  def decode(self, latent_clip):
    return encodec_decoding.decode_clips(self._decoder, [latent_clip])[0]


class _TorchCodec:
  """EnCodec's PyTorch encoder and decoder (the reference)."""

  def __init__(self, dataset, checkpoint, random_seed, device, batch_size):
    # pylint: disable=g-import-not-at-top
    from precompute import codec
    from precompute import encodec_weights
    self._codec, self.batch_size = codec, batch_size
    self._model, self.weights = encodec_model(dataset, checkpoint,
                                              random_seed)
    self._device = encodec_weights.device(device)
    self._model.to(self._device)

  def encode(self, clip):
    return np.concatenate(list(self._codec.encode(
        self._model, [clip], device=self._device,
        batch_size=self.batch_size)))

  def decode(self, latent_clip):
    return self._codec.decode(self._model, [latent_clip], device=self._device,
                              batch_size=self.batch_size)[0]


class Arranger:
  """A trained run and its EnCodec, loaded once, arranging pairs of clips:
  what `arrange` does for one pair and the web app for each request.

  Checkpoints are loaded when first asked for and kept (at most
  `max_models` of them, the least recently used given up first).
  """

  def __init__(self, workdir, *, data_dir=None, checkpoint=None,
               random_seed=None, device='auto', batch_size=4,
               max_models=2):
    self.workdir = os.fspath(workdir)
    self.config = run_dir.read_config(workdir)
    self.seconds = self.config.num_frames / latents.FRAME_RATE
    data_dir = data_dir or self.config.data.dir
    self.dataset = latents.LatentDataset(data_dir) if data_dir else None
    self._codec_settings = (checkpoint, random_seed, device, batch_size)
    self._models = collections.OrderedDict()
    self._max_models = max_models

  @functools.cached_property
  def codec(self):
    """EnCodec as the dataset was encoded, loaded when first used (after
    the clips are read, so that a bad file costs no loading)."""
    checkpoint, random_seed, device, batch_size = self._codec_settings
    if self.dataset is not None and self.dataset.manifest.encoder == 'jax':
      return _JaxCodec(self.dataset, checkpoint, random_seed)
    return _TorchCodec(self.dataset, checkpoint, random_seed, device,
                       batch_size)

  def model(self, which) -> trained_model.TrainedModel:
    """Checkpoint `which` (best, latest or a step), loaded once."""
    if which not in self._models:
      self._models[which] = trained_model.TrainedModel.load(
          self.workdir, which, dataset=self.dataset)
      while len(self._models) > self._max_models:
        self._models.popitem(last=False)
    self._models.move_to_end(which)
    return self._models[which]

  def read_clips(self, input_path, target_path, input_start=0.0,
                 target_start=0.0) -> list[np.ndarray]:
    """The model's clip of each file, from its start second."""
    return [read_clip(input_path, '--input', input_start, self.seconds),
            read_clip(target_path, '--target', target_start, self.seconds)]

  def arrange(self, clips, out_path, which='best', title='',
              progress=lambda stage: None) -> int:
    """Writes out_path (.wav, the output), its .png (the masks) and the
    clips as .input.wav and .target.wav; returns the checkpoint's step.
    progress(stage) is told each stage as it starts."""
    stem = os.path.splitext(out_path)[0]
    trained = self.model(which)
    progress('encoding')
    raw_input, raw_target = (self.codec.encode(clip) for clip in clips)
    progress('arranging')
    arrays = trained.run_pair(raw_input, raw_target)
    progress('decoding')
    output = self.codec.decode(
        np.asarray(trained.space.denormalise(arrays['output'])))
    progress('writing')
    wav_files.write_wavs([(os.path.basename(stem), output)],
                         os.path.dirname(os.path.abspath(out_path)))
    samples.save_mask_picture(arrays, stem + '.png', title)
    for part, clip in zip(('input', 'target'), clips):
      report.write_audio(f'{stem}.{part}.wav', clip)
    return trained.step

  def facts(self, step, input_name, input_start, target_name, target_start):
    """(label, value) rows that say what an arrangement was made of."""
    return [('input', f'{input_name}, from {input_start:g} s'),
            ('target', f'{target_name}, from {target_start:g} s'),
            ('length', f'{self.seconds:g} s each'),
            ('model', f'{os.path.abspath(self.workdir)}, checkpoint step '
                      f'{step}'),
            ('EnCodec weights', self.codec.weights)]


def arrange(workdir, input_path, target_path, out_path, *, input_start=0.0,
            target_start=0.0, which='best', data_dir=None, checkpoint=None,
            random_seed=None, device='auto', batch_size=4) -> int:
  """Writes out_path (.wav), its .png and .html and the two clips'
  .input.wav and .target.wav; returns the checkpoint's step."""
  stem, suffix = os.path.splitext(out_path)
  if suffix.lower() != '.wav':
    raise ValueError(f'--out {out_path}: expected a .wav file name')
  arranger = Arranger(workdir, data_dir=data_dir, checkpoint=checkpoint,
                      random_seed=random_seed, device=device,
                      batch_size=batch_size)
  clips = arranger.read_clips(input_path, target_path, input_start,
                              target_start)
  title = f'{os.path.basename(input_path)} + {os.path.basename(target_path)}'
  step = arranger.arrange(clips, out_path, which, title)
  name = os.path.basename(stem)
  report.write_page(stem + '.html', f'Jingle-JAX arrangement: {title}', [
      (None, report.encodec_weights_note(arranger.codec.weights)),
      ('The clips', report.facts(arranger.facts(
          step, input_path, input_start, target_path, target_start))),
      ('Listen', report.players([('input clip', f'{name}.input.wav'),
                                 ('target clip', f'{name}.target.wav'),
                                 ('output', f'{name}.wav')])),
      ('Masks', report.picture(f'{name}.png', 'masks of the creative '
                               'agent'))])
  return step


def define_flags():
  """The command line (defined only when run as a program)."""
  cli.define_checkpoint_flags()
  cli.define_encodec_flags()
  flags.DEFINE_string('input', None, 'Audio file of the input song.')
  flags.DEFINE_string('target', None, 'Audio file of the target song.')
  flags.DEFINE_string('out', None, 'The .wav to write (and its .png and '
                      '.html).')
  flags.DEFINE_float('input-start', 0.0, 'Second of --input the clip starts '
                     'at.', lower_bound=0.0)
  flags.DEFINE_float('target-start', 0.0, 'Second of --target the clip '
                     'starts at.', lower_bound=0.0)


def run(flag_values) -> None:
  # The model and EnCodec share the accelerator: JAX takes memory as needed.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  step = arrange(
      flag_values.workdir, flag_values.input, flag_values.target,
      flag_values.out, input_start=flag_values['input-start'].value,
      target_start=flag_values['target-start'].value,
      which=cli.checkpoint_choice(flag_values.checkpoint),
      data_dir=flag_values['data-dir'].value,
      checkpoint=flag_values['encodec-checkpoint'].value,
      random_seed=flag_values['random-encodec'].value,
      device=flag_values.device)
  print(f'checkpoint step {step}: {flag_values.out}')
  print(os.path.splitext(flag_values.out)[0] + '.html')


if __name__ == '__main__':
  cli.run('jingle_jax.arrange', run, define_flags,
          required=['workdir', 'input', 'target', 'out'], runs_torch=True)
