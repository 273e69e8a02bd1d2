"""The training program end to end on a tiny random dataset (runs through
the CLI in subprocesses: tests/training_runs.py)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jingle_jax import train
from jingle_jax.config import run_config
from jingle_jax.data import input_pipeline
from jingle_jax.data import latents
from jingle_jax.inference import trained_model
from jingle_jax.training import loop
from jingle_jax.training import run_dir
from jingle_jax.training import workdir_lock
from damage import damage
import train_config
from training_runs import checkpoint_steps
from training_runs import command
from training_runs import free_port
from training_runs import log_lines
from training_runs import losses
from training_runs import records
from training_runs import run
from training_runs import SONG_FRAMES
from training_runs import strip_timings
from training_runs import TESTS_DIR
from training_runs import wait_until
from training_runs import with_devices


@pytest.fixture(scope='module')
def four_devices(tmp_path_factory, env, data_dir):
  """1 process x 4 devices x 1 pair, 5 steps."""
  workdir = tmp_path_factory.mktemp('four_devices')
  run(env, workdir, data_dir, '--config.per_device_batch_size=1',
      '--config.num_train_steps=5', devices=4)
  return workdir


def assert_same_losses(workdir, reference):
  """Train losses of every step and the validation at step 4."""
  train_losses = losses(workdir)
  assert len(train_losses) == 5
  np.testing.assert_allclose(train_losses, losses(reference)[:5], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(losses(workdir, 'val')[:1],
                             losses(reference, 'val')[:1], rtol=1e-5,
                             atol=1e-5)


def test_four_devices_match_one(one_device, four_devices):
  assert_same_losses(four_devices, one_device)


def test_two_processes_match_one(tmp_path, env, data_dir, four_devices):
  coordinator = f'localhost:{free_port()}'
  env = with_devices(env, 2)
  processes = [subprocess.Popen(
      command(tmp_path, data_dir, '--config.per_device_batch_size=1',
              '--config.num_train_steps=5',
              f'--coordinator_address={coordinator}', '--num_processes=2',
              f'--process_id={i}'), env=env) for i in range(2)]
  assert [p.wait(timeout=300) for p in processes] == [0, 0]
  assert_same_losses(tmp_path, four_devices)


def test_killed_run_resumes_exactly(tmp_path, env, data_dir, one_device):
  killed = subprocess.run(
      [sys.executable, os.path.join(TESTS_DIR, 'killed_run.py'),
       str(tmp_path), data_dir],
      env=with_devices(dict(env, PYTHONPATH=TESTS_DIR), 1),
      stderr=subprocess.DEVNULL, check=False)
  assert killed.returncode == -signal.SIGKILL
  assert checkpoint_steps(tmp_path) == [2, 4]
  run(env, tmp_path, data_dir)
  resumed = records(tmp_path)
  assert [r['step'] for r in resumed] == list(range(1, 9))
  # The killed run's lock blocks nothing.
  assert (tmp_path / workdir_lock.LOCK_FILE).exists()
  assert strip_timings(records(one_device)) == strip_timings(resumed)
  assert records(one_device, 'val') == records(tmp_path, 'val')


def test_sigterm_saves_and_exits_cleanly(tmp_path, env, data_dir):
  process = subprocess.Popen(
      command(tmp_path, data_dir, '--config.num_train_steps=1000'),
      env=env, stderr=subprocess.DEVNULL)
  wait_until(lambda: records(tmp_path), process)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 0
  last_step = records(tmp_path)[-1]['step']
  assert 0 < last_step < 1000
  assert checkpoint_steps(tmp_path)[-1] == last_step


def test_a_damaged_latest_checkpoint_is_saved_again(tmp_path, env, data_dir,
                                                    one_device):
  workdir = tmp_path / 'run'
  shutil.copytree(one_device, workdir)
  damage(workdir, 8, 'truncate')
  result = run(env, workdir, data_dir, '--config.num_train_steps=10',
               check=False)
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert len(log_lines(result.stderr)) < 20
  assert 'checkpoints/8 cannot be read' in result.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == [
      '10', '6', '8', '8.unreadable']
  assert [r['step'] for r in records(workdir)] == list(range(1, 11))
  for which in ('best', 'latest', 8):  # all readable again
    trained_model.TrainedModel.load(workdir, which)


def test_a_config_that_changes_checkpoints_is_refused_before_writing(
    tmp_path, env, data_dir, one_device):
  workdir = tmp_path / 'run'
  shutil.copytree(one_device, workdir)
  def contents():  # but the lock's, which names each run that took it
    return {path: path.read_bytes() for path in workdir.rglob('*')
            if path.is_file() and path.name != workdir_lock.LOCK_FILE}

  before = contents()
  result = run(env, workdir, data_dir, '--config.model.mask_hidden=32',
               check=False)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  last = log_lines(result.stderr)[-1]
  assert last.startswith('jingle_jax.train: error: ')
  assert 'model.mask_hidden 16 -> 32' in last and 'new --workdir' in last
  assert before == contents()
  trained_model.TrainedModel.load(workdir)  # sampling still works
  # A change that keeps what a checkpoint holds resumes, and is logged.
  result = run(env, workdir, data_dir, '--config.optim.learning_rate=0.0005',
               '--config.num_train_steps=9', check=False)
  assert result.returncode == 0, result.stderr
  assert ("config changed from the recorded one: num_train_steps 8 -> 9, "
          "optim.learning_rate 0.0001 -> 0.0005") in result.stderr
  assert run_dir.read_config(workdir).optim.learning_rate == 5e-4


def test_sample_on_unreadable_checkpoints_says_so_briefly(tmp_path, env,
                                                          one_device):
  workdir = tmp_path / 'run'
  shutil.copytree(one_device, workdir)
  for step in checkpoint_steps(workdir):
    damage(workdir, step, 'truncate')
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.sample', '--workdir', str(workdir),
       '--out-dir', str(tmp_path / 'samples')], env=env, capture_output=True,
      text=True)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  lines = log_lines(result.stderr)
  assert len(lines) < 20, result.stderr
  assert 'no readable checkpoint' in result.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '6', '8']


NAN_SCRIPT = textwrap.dedent('''
    import sys
    import jax.numpy as jnp
    import numpy as np
    from jingle_jax import train
    from jingle_jax.data import input_pipeline, latent_space
    from jingle_jax.training import loop
    import train_config

    workdir, data_dir, first_bad, last_bad = sys.argv[1:]
    clean_batches = input_pipeline.train_batches

    def batches(*args, start_step, **kwargs):
      for step, batch in enumerate(clean_batches(*args, start_step=start_step,
                                                 **kwargs), start_step):
        if int(first_bad) <= step <= int(last_bad):
          batch['input'][0, 0, 0] = np.nan
        yield batch

    input_pipeline.train_batches = batches
    # The data check would stop at the NaN: bypassed, to reach the guard of
    # a non-finite loss or gradient, whatever its cause.
    latent_space.LatentSpace.fault = lambda self, inputs, targets: (
        jnp.asarray(latent_space.NO_FAULT, jnp.int32))
    config = train_config.get_config()
    config.data.dir = data_dir
    config.max_consecutive_skips = 2
    try:
      train.train_and_evaluate(config, workdir)
    except loop.TooManySkippedSteps as e:
      print(e)
''')


def run_with_nan(env, workdir, data_dir, first_bad, last_bad):
  return subprocess.run(
      [sys.executable, '-c', NAN_SCRIPT, workdir, data_dir, str(first_bad),
       str(last_bad)], env=dict(env, PYTHONPATH=os.pathsep.join(
          filter(None, [TESTS_DIR, env.get('PYTHONPATH')]))), check=True,
      capture_output=True, text=True).stdout


def test_non_finite_steps_are_skipped_and_counted(tmp_path, env, data_dir):
  run_with_nan(env, tmp_path / 'one', data_dir, 2, 2)  # the third batch
  skipped = [r['skipped'] for r in records(tmp_path / 'one')]
  assert skipped == [0, 0, 1, 0, 0, 0, 0, 0]
  assert records(tmp_path / 'one')[2]['loss'] is None  # NaN
  model = trained_model.TrainedModel.load(tmp_path / 'one', 'latest')
  assert (model.step, model.updates) == (8, 7)  # one of 8 steps skipped

  message = run_with_nan(env, tmp_path / 'many', data_dir, 4, 99)
  assert 'by step 6, 2 steps in a row' in message
  assert [r['skipped'] for r in records(tmp_path / 'many')] == [0, 0, 0, 0,
                                                                1, 1]
  assert checkpoint_steps(tmp_path / 'many') == [2, 4]  # 4: the last good


def first_reading_step(frame_of_song, config, num_steps):
  """The first step (0-based) whose batch reads frame `frame_of_song` =
  (train song number, frame), and whether as an input."""
  song, frame = frame_of_song
  window = config.num_frames
  starts = [(s, start) for s in range(4)
            for start in range(0, SONG_FRAMES - 2 * window + 1, window)]
  for step in range(num_steps):
    inputs, targets = input_pipeline.step_pairs(
        step, num_pairs=len(starts), seed=config.seed,
        global_batch_size=config.per_device_batch_size,
        shuffle_targets=True)
    for pairs, offset in ((inputs, 0), (targets, window)):
      for pair in pairs:
        pair_song, start = starts[pair]
        if pair_song == song and 0 <= frame - start - offset < window:
          return step
  return None


@pytest.mark.parametrize('split, value, reason', [
    ('train', np.nan, 'nan, not finite'),
    ('train', 20000.0, r'20000, [\d.e+]+ standard deviations'),
    ('val', -np.inf, '-inf, not finite')])
def test_a_bad_latent_stops_training_in_one_line(tmp_path, env, data_dir,
                                                 split, value, reason):
  """Values are checked in the step: a bad one stops the run by the next log
  step, in one line naming shard, song, frame and channel; its batch had no
  effect, and no checkpoint follows it."""
  bad = tmp_path / 'latents'
  shutil.copytree(data_dir, bad)
  config = train_config.get_config()
  if split == 'train':  # read first by the third step's batch
    song, frame = next(
        (song, frame) for song in range(4) for frame in range(SONG_FRAMES)
        if first_reading_step((song, frame), config, 8) == 2)
  else:  # read by the validation at step 4
    song, frame = 5, 13
  shard = np.load(bad / f'song-song{song}.npy', mmap_mode='r+')
  shard[frame, 5] = value
  shard.flush()
  del shard
  result = run(env, tmp_path / 'work', bad, '--config.log_every_steps=4',
               check=False)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  last = log_lines(result.stderr)[-1]
  assert re.fullmatch(
      rf"jingle_jax.train: error: \S*song-song{song}.npy: song 'song{song}': "
      rf'frame {frame}, channel 5 is {reason}.*', last), last
  assert checkpoint_steps(tmp_path / 'work') == [2]  # none at 4
  model = trained_model.TrainedModel.load(tmp_path / 'work', 'latest')
  assert model.step == model.updates == 2
  assert all(np.all(np.isfinite(leaf))
             for leaf in jax.tree.leaves(model.variables))


@pytest.mark.parametrize('flag, message', [
    ('--config.no_such_field=1', "the config has no field 'no_such_field'"),
    ('--config.data.dir=/nowhere', '/nowhere'),
])
def test_bad_config_is_one_clear_message(tmp_path, env, data_dir, flag,
                                         message):
  result = run(env, tmp_path, data_dir, flag, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      'jingle_jax.train: error: ')
  assert message in result.stderr.strip().splitlines()[-1]
  assert 'Traceback' not in result.stderr


def test_config_checks(tmp_path, data_dir):
  config = train_config.get_config()
  config.data.dir = str(tmp_path)
  with pytest.raises(latents.LatentDataError, match='manifest.json'):
    train.train_and_evaluate(config, str(tmp_path / 'work'))
  config.data.dir = ''
  with pytest.raises(run_config.ConfigError, match='config.data.dir is empty'):
    train.train_and_evaluate(config, str(tmp_path / 'work'))
  config.data.dir = data_dir
  with pytest.raises(run_config.ConfigError, match='no workdir'):
    train.train_and_evaluate(config, '')
  config.per_device_batch_size = 64
  with pytest.raises(run_config.ConfigError, match='16 train pairs of 8-frame '
                     'clips, fewer than one global batch of 64'):
    train.train_and_evaluate(config, str(tmp_path / 'work'))
  config.eval_every_steps = 0
  with pytest.raises(run_config.ConfigError, match='config.eval_every_steps'):
    train.train_and_evaluate(config, str(tmp_path / 'work'))


def test_early_stopping_counts_validations_without_a_better_loss():
  stopping = loop.early_stopping(4)
  for val_loss, since_best in [(3.0, 0), (2.0, 0), (2.5, 1), (2.0, 2),
                               (float('nan'), 3), (1.0, 0)]:
    assert not stopping.should_stop
    stopping = stopping.update(val_loss)
    assert stopping.patience_count == since_best
  assert stopping.best_metric == 1.0
  for patience in (1, 2, 3):  # stops at the patience-th worse validation
    stopping, stops = loop.early_stopping(patience, 1.0), []
    for _ in range(4):
      stopping = stopping.update(1.5)
      stops.append(stopping.should_stop)
    assert stops == [update >= patience for update in range(1, 5)]
  never = loop.early_stopping(0, 1.0)  # patience 0: never
  for _ in range(10):
    never = never.update(1.5)
  assert not never.should_stop
  # A resumed run that had stopped stays stopped.
  assert loop.early_stopping(2, 1.0, evals_since_best=2).should_stop


def test_skips_in_a_row_are_counted_across_windows():
  assert loop.count_skips(0, [1, 0, 1, 1], limit=3) == 2
  assert loop.count_skips(2, [0], limit=3) == 0
  with pytest.raises(loop.TooManySkippedSteps, match='3 steps in a row'):
    loop.count_skips(2, [1, 0], limit=3)


def test_schedule_follows_epochs_unless_given_steps():
  config = train_config.get_config()
  config.num_train_steps = config.eval_every_steps = -1
  config.checkpoint_every_steps = -1
  assert loop.Schedule.from_config(config, 28) == loop.Schedule(
      steps_per_epoch=28, num_train_steps=200 * 28, eval_every=28,
      checkpoint_every=10 * 28)
  config.num_train_steps, config.eval_every_steps = 7, 3
  config.checkpoint_every_steps = 5
  assert loop.Schedule.from_config(config, 28) == loop.Schedule(28, 7, 3, 5)
