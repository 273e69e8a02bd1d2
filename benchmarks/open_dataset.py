"""Start-up time and memory of training against the dataset's size.

  python benchmarks/open_dataset.py write DIR --songs N --seconds S
  python benchmarks/open_dataset.py measure DIR... [--repeats 3]
      [--drop-caches] [--code ROOT]

`write` makes a dataset of N songs of S seconds of synthetic latents
(float16, normal noise) with jingle_jax.data.latent_writer, as precompute writes
it. `measure` runs, for each repeat and each DIR in turn (interleaved), two
commands in a fresh process and prints one JSON line for each: `open` (the
dataset and its train and val pairs, as training opens them, with
configs/demo.py) and `train` (python -m jingle_jax.train --config
configs/demo.py, one step, in a fresh workdir; the compilation cache warmed
beforehand): its wall time and max RSS. --drop-caches empties the page
cache before each command (root only). --code runs another checkout's code.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable-next=wrong-import-position
from jingle_jax.data import latent_writer
from jingle_jax.data import latents  # pylint: disable=wrong-import-position

OPEN = """
import sys
from configs import demo
from jingle_jax.data import input_pipeline
config = demo.get_config()
config.data.dir = sys.argv[1]
_, train, val = input_pipeline.training_pairs(
    config.data, config.num_frames, config.model.latent_dim, 1, False)
print(len(train), len(val))
"""


def write(out_dir, songs: int, seconds: float) -> None:
  frames = round(seconds * latents.FRAME_RATE)
  writer = latent_writer.DatasetWriter(out_dir, encodec_weights='random:0')
  rng = np.random.default_rng(0)
  records = []
  for index in range(songs):
    song_id = f'{index:06d}'
    with writer.song(song_id, f'{song_id}.wav') as song:
      song.append(rng.standard_normal((frames, latents.LATENT_DIM),
                                      np.float32))
      records.append(dict(song.commit(frames / latents.FRAME_RATE),
                          split='val' if index % 10 == 9 else 'train'))
  writer.finish(records, [])


def timed(command, env, drop_caches: bool) -> dict:
  """Wall seconds and max RSS (MB) of one command."""
  if drop_caches:
    subprocess.run(['sync'], check=True)
    with open('/proc/sys/vm/drop_caches', 'w') as f:
      f.write('3\n')
  started = time.perf_counter()
  process = subprocess.Popen(command, env=env, cwd=env['PYTHONPATH'],
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  stderr = process.stderr.read()
  _, status, usage = os.wait4(process.pid, 0)
  seconds = time.perf_counter() - started
  if status:
    raise RuntimeError(f'{command}: exit status {status}: {stderr[-2000:]}')
  return {'seconds': round(seconds, 2), 'max_rss_mb': usage.ru_maxrss // 1024}


def measure(data_dirs, repeats: int, drop_caches: bool, code: str) -> None:
  cache = tempfile.mkdtemp(prefix='open_dataset_cache_')
  env = dict(os.environ, PYTHONPATH=code, JAX_COMPILATION_CACHE_DIR=cache)
  workdir = os.path.join(cache, 'workdir')

  def train(data_dir):
    shutil.rmtree(workdir, ignore_errors=True)
    return [sys.executable, '-m', 'jingle_jax.train',
            '--config', 'configs/demo.py', f'--config.data.dir={data_dir}',
            '--config.num_train_steps=1', f'--workdir={workdir}']

  timed(train(data_dirs[0]), env, False)  # fills the compilation cache
  for repeat in range(repeats):
    for data_dir in data_dirs:
      for name, command in (
          ('open', [sys.executable, '-c', OPEN, data_dir]),
          ('train', train(data_dir))):
        print(json.dumps({'data_dir': data_dir, 'what': name,
                          'repeat': repeat, 'drop_caches': drop_caches,
                          **timed(command, env, drop_caches)}), flush=True)
  shutil.rmtree(cache)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest='command', required=True)
  writing = commands.add_parser('write', help='a random dataset of '
                                'SONGS songs of SECONDS each')
  writing.add_argument('out_dir')
  writing.add_argument('--songs', type=int, required=True)
  writing.add_argument('--seconds', type=float, required=True)
  measuring = commands.add_parser('measure', help='the time to open each '
                                  'dataset, this code against --code\'s')
  measuring.add_argument('data_dirs', nargs='+')
  measuring.add_argument('--repeats', type=int, default=3)
  measuring.add_argument('--drop-caches', action='store_true')
  measuring.add_argument('--code', default=REPO)
  args = parser.parse_args()
  if args.command == 'write':
    write(args.out_dir, args.songs, args.seconds)
  else:
    measure([os.path.abspath(d) for d in args.data_dirs], args.repeats,
            args.drop_caches, os.path.abspath(args.code))


if __name__ == '__main__':
  main()
