"""TensorBoard's pictures and audio of validation pairs while training."""

import io
import os
import struct
import subprocess
import sys

import jax
import numpy as np
import soundfile
from tensorboardX.proto import event_pb2

from jingle_jax import audio_decoder
from jingle_jax import latents
from jingle_jax.models import encodec_decoder
import latent_data

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'train_config.py')
FRAMES = 8  # train_config's clips


def events(directory):
  """Every Event of the TensorBoard files in `directory` (TFRecords)."""
  found = []
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      length, = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      found.append(event)
      offset += 12 + length + 4
  return found


def test_validations_log_mask_pictures_and_decoded_audio(tmp_path):
  data_dir = tmp_path / 'latents'
  decoder = encodec_decoder.EncodecDecoder().init(
      jax.random.key(0), np.zeros((1, 7, latents.LATENT_DIM)))['params']
  audio_decoder.write(data_dir, decoder, 'random:0')
  rng = np.random.default_rng(0)
  songs = {f'song{i}': (split, rng.normal(size=(40, latents.LATENT_DIM)))
           for i, split in enumerate(['train'] * 2 + ['val'])}
  latent_data.write_dataset(data_dir, songs, dtype='float32',
                            decoder=audio_decoder.DECODER_FILE)
  workdir = tmp_path / 'work'
  subprocess.run(
      [sys.executable, '-m', 'jingle_jax.train', f'--config={CONFIG}',
       f'--workdir={workdir}', f'--config.data_dir={data_dir}',
       '--config.num_train_steps=4', '--config.eval_every_steps=2',
       '--config.media_pairs=1', '--config.media_every_evals=2'],
      env=dict(os.environ, JAX_PLATFORMS='cpu'), check=True,
      capture_output=True)

  media = {}
  for event in events(workdir / 'tensorboard'):
    for value in event.summary.value:
      if value.HasField('image') or value.HasField('audio'):
        media[value.tag, event.step] = value
  # Validations at steps 2 and 4; the second of them shows media.
  assert sorted(media) == [('val_pair_0/input', 4), ('val_pair_0/masks', 4),
                           ('val_pair_0/output', 4), ('val_pair_0/target', 4)]
  picture = media['val_pair_0/masks', 4].image
  assert (picture.height, picture.width, picture.colorspace) == (800, 1000, 3)
  # The first matched pair: input frames 0-7 of the val song, target 8-15.
  expected = audio_decoder.decode(decoder, [songs['song2'][1][:FRAMES],
                                            songs['song2'][1][FRAMES:16]])
  for name, want in zip(('input', 'target'), expected):
    sound = media[f'val_pair_0/{name}', 4].audio
    samples, rate = soundfile.read(io.BytesIO(sound.encoded_audio_string))
    assert rate == sound.sample_rate == 24_000
    np.testing.assert_allclose(samples, np.clip(want, -1, 1), atol=1e-4)
  output, _ = soundfile.read(io.BytesIO(
      media['val_pair_0/output', 4].audio.encoded_audio_string))
  assert output.shape == (FRAMES * 320,) and np.any(output)
