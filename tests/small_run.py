"""A tiny trained run and two songs, for the commands that arrange."""

import functools

import jax
import numpy as np
import soundfile

from jingle_jax import synth
from jingle_jax.config import run_config
from jingle_jax.data import latents
from jingle_jax.training import run_dir
from jingle_jax.training import train_step
import latent_data
import train_config


def trained_run(tmp_path_factory):
  """(workdir, audio dir): an initialised model of 8-frame clips whose
  dataset records random EnCodec weights (seed 0), and two songs."""
  data_dir = tmp_path_factory.mktemp('latents')
  rng = np.random.default_rng(0)
  latent_data.write_dataset(data_dir, {
      song_id: (split, 0.03 * rng.normal(size=(40, latents.LATENT_DIM)))
      for song_id, split in (('a', 'train'), ('b', 'val'))})
  config = train_config.get_config()
  config.data.dir = str(data_dir)
  config = run_config.parse(config)
  state = jax.jit(functools.partial(train_step.create_train_state, config))(
      jax.random.key(0))
  workdir = tmp_path_factory.mktemp('workdir')
  training_run = run_dir.open_for_training(workdir, config)
  training_run.save(state, run_dir.CheckpointExtras(
      data_position=3, rng=jax.random.key(0), val_loss=1.0))
  training_run.close()
  songs = tmp_path_factory.mktemp('songs')
  soundfile.write(songs / 'input.wav', synth.render_song(3, 0, 2.0, 44_100),
                  44_100)
  soundfile.write(songs / 'target.mp3', synth.render_song(3, 1, 2.0, 48_000),
                  48_000, format='MP3', subtype='MPEG_LAYER_III')
  return workdir, songs
