"""The training path, and reading audio, never import torch, even with torch
installed."""

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
