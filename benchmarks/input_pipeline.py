"""The input pipeline's speed, and the training loop's against its bench.

  python benchmarks/input_pipeline.py loader DIR [--cold] [--repeats 3]
      [--steps 40] [--code ROOT]
  python benchmarks/input_pipeline.py loop DIR [--steps 30]

The datasets come from `benchmarks/open_dataset.py write DIR --songs N
--seconds 180` (float16 latents; 38 songs: 350 train pairs of the seed
shapes; 2,000 songs: 100 hours, 6.5 GB).

`loader` times, in a fresh process per figure, what training reads at the
seed shapes (1,200-frame clips, 64 pairs a step, targets shuffled), with
nothing else running: `host` iterates input_pipeline.train_batches alone,
`devices` (to_devices) also puts each batch on the devices
(prefetch_to_devices). Warm: the files in the page cache, as an earlier
figure leaves them. --cold: the dataset's pages dropped from the
page cache (posix_fadvise DONTNEED, no root needed) before each figure, and
the disk's own sequential read speed measured the same way with `dd` in the
same run. --code runs another checkout's code (before and after, one run).

`loop` runs `python -m jingle_jax.train` with a one-layer model at the seed
shapes (logging every 5 steps), then `python -m jingle_jax.bench` with the
same config: the loop's pairs/s after its first window (which compiles)
against the bench's, and each window's data-wait fraction and host and
device time per step, from metrics.jsonl.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOADER = """
import json, sys, time
import jax
from configs import creative
from jingle_jax.core import parallel
from jingle_jax.data import input_pipeline
data_dir, steps, devices = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1'
config = creative.get_config()
config.data.dir = data_dir
batch_size = 64
_, train, _ = input_pipeline.training_pairs(
    config.data, config.num_frames, config.model.latent_dim, 1, False)
batches = input_pipeline.train_batches(
    train, seed=0, global_batch_size=batch_size, rows=slice(0, batch_size),
    start_step=0, shuffle_targets=True)
if devices:
  sharding = parallel.data_sharding(parallel.make_mesh())
  batches = input_pipeline.prefetch_to_devices(
      batches, size=2, sharding=sharding, global_batch_size=batch_size)
next(batches)  # threads and maps started
start = time.perf_counter()
for _ in range(steps):
  jax.block_until_ready(next(batches))
seconds = time.perf_counter() - start
batches.close()  # stops the producer thread before the interpreter exits
print(json.dumps({'pairs': len(train), 'pairs_per_s':
                  round(steps * batch_size / seconds, 1)}))
"""


def drop_from_page_cache(paths) -> None:
  """Evicts the files' clean pages: the next reads come from the disk."""
  for path in paths:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def disk_read_mb_per_s(paths, megabytes: int = 2048) -> float:
  """`dd`'s sequential read speed over the first files, evicted first."""
  chosen, total = [], 0
  for path in paths:
    chosen.append(path)
    total += os.path.getsize(path)
    if total >= megabytes << 20:
      break
  drop_from_page_cache(chosen)
  seconds = 0.0
  for path in chosen:
    result = subprocess.run(['dd', f'if={path}', 'of=/dev/null', 'bs=4M'],
                            capture_output=True, text=True, check=True)
    # dd's last line: "N bytes (...) copied, S s, R MB/s"
    seconds += float(result.stderr.strip().splitlines()[-1].split(', ')[-2]
                     .split()[0])
  return round(total / seconds / 1e6, 1)


def loader(data_dir, cold: bool, repeats: int, steps: int, code: str):
  shards = sorted(glob.glob(os.path.join(data_dir, 'song-*.npy')))
  env = dict(os.environ, PYTHONPATH=code, JAX_PLATFORMS='cpu')
  for repeat in range(repeats):
    for devices in (False, True):
      record = {'code': code, 'data_dir': data_dir, 'repeat': repeat,
                'cold': cold, 'to_devices': devices, 'steps': steps}
      if cold:
        record['dd_mb_per_s'] = disk_read_mb_per_s(shards)
        drop_from_page_cache(shards)
      result = subprocess.run(
          [sys.executable, '-c', LOADER, data_dir, str(steps),
           '1' if devices else '0'], env=env, cwd=code, capture_output=True,
          text=True)
      if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
      record.update(json.loads(result.stdout.strip().splitlines()[-1]))
      if cold:  # the bytes read, against the disk's speed
        record['mb_per_s'] = round(
            record['pairs_per_s'] * 2 * 1200 * 128 * 2 / 1e6, 1)
      print(json.dumps(record), flush=True)


# A one-layer model at the seed shapes: the step is short, the data the same.
ONE_LAYER = ['--config.model.num_stages=1', '--config.model.num_layers=1',
             '--config.num_frames=1200', '--config.per_device_batch_size=64',
             '--config.loss.spectral_outlier_weight=0']


def loop(data_dir, steps: int) -> None:
  workdir = tempfile.mkdtemp(prefix='input_pipeline_loop_')
  config = os.path.join(REPO, 'configs', 'creative.py')
  env = dict(os.environ, PYTHONPATH=REPO)
  subprocess.run(
      [sys.executable, '-m', 'jingle_jax.train', f'--config={config}',
       f'--workdir={workdir}', f'--config.data.dir={data_dir}',
       f'--config.num_train_steps={steps}', '--config.log_every_steps=5',
       f'--config.eval_every_steps={10 * steps}',
       f'--config.checkpoint_every_steps={10 * steps}',
       '--config.media_pairs=0',
       *ONE_LAYER], env=env, cwd=REPO, check=True, capture_output=True)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train = [r for r in map(json.loads, f) if r['split'] == 'train']
  bench = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.bench', f'--config={config}',
       f'--steps={max(3, steps // 3)}', *ONE_LAYER], env=env, cwd=REPO,
      check=True, capture_output=True, text=True)
  bench = json.loads(bench.stdout.strip().splitlines()[-1])
  later = train[1:]  # the first window holds the compilation
  loop_pairs = sum(r['pairs_per_second'] for r in later) / len(later)
  print(json.dumps({
      'loop_pairs_per_s': round(loop_pairs, 2),
      'bench_pairs_per_s': bench['pairs_per_s'],
      'loop_share_of_bench': round(loop_pairs / bench['pairs_per_s'], 3),
      'data_wait_fraction': [r.get('data_wait_fraction') for r in later],
      'host_ms_per_step': [r.get('host_ms_per_step') for r in later],
      'device_ms_per_step': [r.get('device_ms_per_step') for r in later],
  }), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest='command', required=True)
  loading = commands.add_parser(
      'loader', help='pairs/s of the training batches alone, this code '
      'against --code\'s')
  loading.add_argument('data_dir')
  loading.add_argument('--cold', action='store_true')
  loading.add_argument('--repeats', type=int, default=3)
  loading.add_argument('--steps', type=int, default=40)
  loading.add_argument('--code', default=REPO)
  looping = commands.add_parser(
      'loop', help='the training loop against the bench of its step')
  looping.add_argument('data_dir')
  looping.add_argument('--steps', type=int, default=30)
  args = parser.parse_args()
  if args.command == 'loader':
    loader(os.path.abspath(args.data_dir), args.cold, args.repeats,
           args.steps, os.path.abspath(args.code))
  else:
    loop(os.path.abspath(args.data_dir), args.steps)


if __name__ == '__main__':
  main()
