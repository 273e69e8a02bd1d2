"""Training when the system fails it: a second writer, a full disk, a low
open-file limit (runs through the CLI: tests/training_runs.py)."""

import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np

from jingle_jax.data import latents
from jingle_jax.training import checkpoints
from jingle_jax.training import run_dir
import latent_data
from small_filesystem import small_filesystem
from training_runs import checkpoint_steps
from training_runs import CONFIG
from training_runs import log_lines
from training_runs import records
from training_runs import run
from training_runs import strip_timings
from training_runs import TESTS_DIR
from training_runs import wait_until
from training_runs import with_devices


def held_run(env, workdir, data_dir, output=subprocess.DEVNULL, **variables):
  """tests/killed_run.py in a subprocess, with its $PAUSE_AT or $FULL_AT."""
  return subprocess.Popen(
      [sys.executable, os.path.join(TESTS_DIR, 'killed_run.py'),
       str(workdir), data_dir],
      env=with_devices(dict(env, PYTHONPATH=TESTS_DIR, **variables), 1),
      stdout=output, stderr=output, text=True)


def test_a_second_writer_is_refused_while_the_first_finishes(
    tmp_path, env, data_dir, one_device):
  go = tmp_path / 'go'
  first = held_run(env, tmp_path / 'run', data_dir, PAUSE_AT=str(go))
  wait_until(lambda: os.path.exists(f'{go}.paused'), first)
  second = run(env, tmp_path / 'run', data_dir, check=False)
  assert second.returncode != 0
  lines = log_lines(second.stderr)
  assert len(lines) == 1, second.stderr
  assert re.fullmatch(
      rf'jingle_jax.train: error: {tmp_path}/run is being written by another '
      rf'run \(host {re.escape(socket.gethostname())}, pid {first.pid}, since '
      r'[-0-9]+ [:0-9]+ UTC; .*train.lock\): wait for it to end, or use '
      r'another --workdir', lines[0]), lines[0]
  go.touch()
  assert first.wait(timeout=300) == 0
  assert strip_timings(records(tmp_path / 'run')) == strip_timings(
      records(one_device))
  assert records(tmp_path / 'run', 'val') == records(one_device, 'val')


def test_a_full_disk_stops_training_in_one_line_and_loses_nothing(
    tmp_path, env, data_dir, one_device):
  # Checkpoints take about 78 MB by their arrays (55 MB on disk): room for 2.
  with small_filesystem(tmp_path / 'small', '200m') as small:
    if small is not None:
      workdir = small / 'run'
      failed = run(env, workdir, data_dir, check=False)
      stderr = failed.stderr
    else:  # Orbax finds the disk full at checkpoint 8
      workdir = tmp_path / 'run'
      process = held_run(env, workdir, data_dir, subprocess.PIPE,
                         FULL_AT='8')
      _, stderr = process.communicate(timeout=300)
    assert 'Traceback' not in stderr
    error = log_lines(stderr)[-1]
    assert re.fullmatch(
        rf'jingle_jax.train: error: {workdir}/checkpoints: no space left on '
        r'its filesystem writing checkpoint \d+.* \([.0-9]+ MB free.*\); free '
        'space and rerun: what was written before stays', error), error
    kept = checkpoint_steps(workdir)
    assert kept and not [name for name in os.listdir(workdir / 'checkpoints')
                         if checkpoints.UNFINISHED in name]
    compared = sorted(set(kept) & set(checkpoint_steps(one_device)))
    assert compared
    for step in compared:  # as the uninterrupted run wrote them
      _, state, _ = run_dir.load(workdir, step)
      _, expected, _ = run_dir.load(one_device, step)
      assert jax.tree.all(jax.tree.map(np.array_equal, state, expected))
    if small is not None:
      subprocess.run(['mount', '-o', 'remount,size=1g', str(small)],
                     check=True)
    run(env, workdir, data_dir)
    assert strip_timings(records(workdir)) == strip_timings(
        records(one_device))


def test_a_thousand_songs_train_under_an_open_file_limit_of_64(tmp_path, env):
  rng = np.random.default_rng(0)
  latent_data.write_dataset(tmp_path / 'latents', {
      f's{i:04d}': ('val' if i % 10 == 0 else 'train',
                    rng.normal(size=(40, latents.LATENT_DIM)))
      for i in range(1000)})
  result = subprocess.run(
      ['bash', '-c', 'ulimit -n 64 && exec "$@"', 'bash', sys.executable,
       '-m', 'jingle_jax.train', f'--config={CONFIG}',
       f'--workdir={tmp_path / "run"}',
       f'--config.data.dir={tmp_path / "latents"}',
       '--config.num_train_steps=4'],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert [r['step'] for r in records(tmp_path / 'run', 'val')] == [4]
