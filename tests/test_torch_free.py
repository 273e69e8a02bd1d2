"""The training path, reading audio, and encoding with converted weights never
import torch, even with torch installed."""

import subprocess
import sys

TRAINING_PATH = """
import sys, tempfile
import numpy as np, soundfile
from jingle_jax import arrange, decode, evaluate, sample, train
from jingle_jax.data import audio, input_pipeline, latents
from jingle_jax.inference import encodec_decoding, media_log
from jingle_jax.training import run_log
folder = tempfile.mkdtemp()
log = run_log.RunLog(folder + '/metrics.jsonl', folder, start_step=0,
                     total_steps=1)
log.write(1, 'train', {'loss': 1.0})
soundfile.write(folder + '/tone.flac', np.sin(np.arange(44_100) / 7), 44_100)
assert len(np.concatenate(list(audio.MonoStream(folder + '/tone.flac')))) == 24_000
assert 'tensorboardX' in sys.modules
loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))
print(loaded)
sys.exit(1 if loaded else 0)
"""


def test_training_arranging_and_reading_audio_do_not_load_torch():
  result = subprocess.run([sys.executable, '-c', TRAINING_PATH],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr


def test_the_decode_command_loads_no_training_stack():
  """python -m jingle_jax.decode needs the decoder only: no Orbax, optax or
  torch."""
  code = ('import sys, jingle_jax.decode; print(sorted({m.split(".")[0] for m '
          'in sys.modules} & {"orbax", "optax", "torch"}))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300, check=True)
  assert result.stdout.strip() == '[]', result.stdout


ENCODING = """
import runpy, sys
sys.argv = ['precompute.encode', *sys.argv[1:]]
try:
  runpy.run_module('precompute.encode', run_name='__main__')
except SystemExit as e:
  assert not e.code, e.code
loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))
print(loaded)
sys.exit(1 if loaded else 0)
"""


def test_encoding_with_converted_weights_loads_no_torch(tmp_path):
  # This process may load torch: the conversion needs it, the encoding not.
  from jingle_jax import synth  # pylint: disable=import-outside-toplevel
  from jingle_jax.data import latents  # pylint: disable=import-outside-toplevel
  from precompute import encodec_weights  # pylint: disable=import-outside-toplevel
  from precompute import jax_weights  # pylint: disable=import-outside-toplevel
  import soundfile  # pylint: disable=import-outside-toplevel
  (tmp_path / 'audio').mkdir()
  soundfile.write(tmp_path / 'audio/song.flac',
                  synth.render_song(5, 0, 3.0, 44_100), 44_100)
  weights = tmp_path / 'converted.msgpack'
  jax_weights.write_converted(weights, encodec_weights.random_model(0),
                              'random:0')
  result = subprocess.run(
      [sys.executable, '-c', ENCODING, '--audio-dir', str(tmp_path / 'audio'),
       '--out-dir', str(tmp_path / 'latents'), '--encoder', 'jax',
       '--encoder-weights', str(weights), '--min-seconds', '1'],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "encoding with EnCodec's JAX encoder" in result.stderr
  manifest = latents.LatentDataset(tmp_path / 'latents').manifest
  assert (manifest.encoder, manifest.encodec_weights) == ('jax', 'random:0')
  assert manifest.songs[0].frames == 225
