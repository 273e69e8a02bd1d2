"""The web app's API, in-process: uploads, the queue, results, bad input,
and the scratch folder's life."""

import io
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile

from jingle_jax import arrange
from jingle_jax import synth
from jingle_jax.data import latents
from jingle_jax.web import app as app_lib
from jingle_jax.web import scratch as scratch_lib
import small_run

fastapi_testclient = pytest.importorskip('fastapi.testclient')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return small_run.trained_run(tmp_path_factory)


@pytest.fixture(scope='module')
def served(run, tmp_path_factory):
  """(client, server, songs dir) of a server with a music folder."""
  workdir, songs = run
  server = app_lib.Server(
      arrange.Arranger(workdir), tmp_path_factory.mktemp('scratch'),
      limits=app_lib.Limits(max_upload_bytes=1 << 20,
                            max_upload_seconds=60.0, max_uploads=8),
      music_dir=songs)
  with fastapi_testclient.TestClient(app_lib.make_app(server)) as client:
    yield client, server, songs
  assert not os.path.exists(server.scratch.path)


def upload(client, path, name=None):
  with open(path, 'rb') as f:
    return client.post('/api/songs', files={'file': (
        name or os.path.basename(path), f, 'application/octet-stream')})


def finish(client, request, timeout=120):
  """The status of a submitted request once it ends."""
  response = client.post('/api/arrangements', json=request)
  assert response.status_code == 202, response.text
  status = response.json()
  deadline = time.monotonic() + timeout
  while status['stage'] != 'done' and not status['error']:
    assert time.monotonic() < deadline
    time.sleep(0.05)
    status = client.get(f'/api/arrangements/{status["id"]}').json()
  return status


def wav(client, url):
  response = client.get(url)
  assert response.status_code == 200
  return soundfile.read(io.BytesIO(response.content))


def test_two_uploads_arrange_as_the_command_does(served, tmp_path):
  client, server, songs = served
  info = client.get('/api/info').json()
  assert info['random_weights'] and info['encodec_weights'] == 'random:0'
  assert info['checkpoints'] == ['best', 'latest', '3']
  assert sorted(song['name'] for song in info['music']) == [
      'input.wav', 'target.mp3']
  # A client's name is shown, never used as a path.
  first = upload(client, songs / 'input.wav', '../../escape/input.wav')
  assert first.status_code == 200, first.text
  first = first.json()
  assert first['name'] == 'input.wav' and abs(first['seconds'] - 2.0) < 1e-3
  assert not os.path.exists(os.path.join(server.scratch.path, '..',
                                         'escape'))
  target = next(song for song in info['music']
                if song['name'] == 'target.mp3')
  status = finish(client, {'input': first['id'], 'target': target['id'],
                           'input_start': 0.5, 'target_start': 1.0})
  assert status['error'] is None and status['progress'] == 1.0
  assert dict(status['facts'])['model'].endswith('checkpoint step 3')

  out = tmp_path / 'cli.wav'
  arrange.arrange(server.arranger.workdir, songs / 'input.wav',
                  songs / 'target.mp3', str(out), input_start=0.5,
                  target_start=1.0)
  for name, expected in (('output.wav', out),
                         ('input.wav', tmp_path / 'cli.input.wav'),
                         ('target.wav', tmp_path / 'cli.target.wav')):
    audio, rate = wav(client, status['files'][name])
    reference, _ = soundfile.read(expected)
    assert rate == 24_000 and audio.shape == (8 * latents.HOP,)
    np.testing.assert_array_equal(audio, reference)
  masks = client.get(status['files']['masks.png'])
  assert masks.content[:4] == b'\x89PNG'
  download = client.get(status['files']['output.wav'] + '?download=1')
  assert 'attachment' in download.headers['content-disposition']


def _songs_of_damage():
  """name -> bytes of uploads that must be refused."""
  song = synth.render_song(3, 0, 2.0, 44_100)
  flac = io.BytesIO()
  soundfile.write(flac, song, 44_100, format='FLAC')
  short = io.BytesIO()
  soundfile.write(short, song[:2_000], 44_100, format='WAV')
  long = io.BytesIO()  # 61 s: over the fixture's minute, under its 1 MB
  soundfile.write(long, np.zeros(61 * 4_000, np.int16), 4_000, format='WAV')
  return {'empty.wav': (b'', 422, 'empty file'),
          'notes.ogg': (b'these are words, not sound\n' * 40, 422,
                        'not readable audio'),
          'cut.flac': (flac.getvalue()[:len(flac.getvalue()) // 2], 422,
                       'cut.flac'),
          'short.wav': (short.getvalue(), 422, "the model's clips are"),
          'long.wav': (long.getvalue(), 413, 'longer than this server'),
          'song.exe': (b'MZ' * 100, 415, 'not a kind of audio file'),
          'huge.wav': (b'\0' * (2 << 20), 413, 'limit of 1 MB')}


def test_bad_input_is_a_4xx_with_its_reason_and_serving_goes_on(served):
  client, _, songs = served
  for name, (data, status, message) in _songs_of_damage().items():
    response = client.post('/api/songs', files={'file': (name, data)})
    assert response.status_code == status, (name, response.text)
    assert message in response.json()['error'], name
  good = upload(client, songs / 'input.wav').json()
  requests = {
      'a clip that runs past the end': (
          dict(input_start=1.95), 422, 'starts between 0 and 1.89 s'),
      'an unknown checkpoint': (dict(checkpoint='12'), 404,
                                'no checkpoint 12 in this run; steps: 3'),
      'a checkpoint that is not one': (dict(checkpoint='newest'), 422,
                                       'best, latest or a step'),
      'an unknown song': (dict(target='feedface'), 404, 'no song'),
      'a start that is not a number': (dict(input_start='soon'), 422,
                                       'as numbers')}
  for what, (change, status, message) in requests.items():
    response = client.post('/api/arrangements', json={
        'input': good['id'], 'target': good['id'], **change})
    assert response.status_code == status, (what, response.text)
    assert message in response.json()['error'], what
  assert client.get('/api/arrangements/feedface').status_code == 404
  status = finish(client, {'input': good['id'], 'target': good['id']})
  assert status['stage'] == 'done', status
  assert client.get(status['files']['output.wav'][:-len('output.wav')] +
                    'out.wav').status_code == 404


def test_four_clients_at_once_get_correct_results(served):
  client, _, songs = served
  song = upload(client, songs / 'input.wav').json()
  request = {'input': song['id'], 'target': song['id'], 'input_start': 0.25}
  results = [None] * 4

  def one_client(i):
    results[i] = finish(client, request)

  threads = [threading.Thread(target=one_client, args=(i,))
             for i in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert all(status['stage'] == 'done' for status in results), results
  outputs = [wav(client, status['files']['output.wav'])[0]
             for status in results]
  for output in outputs[1:]:
    np.testing.assert_array_equal(output, outputs[0])


def test_uploads_beyond_the_limit_are_forgotten_and_deleted(served):
  client, server, songs = served
  first = upload(client, songs / 'input.wav').json()
  path = server.songs.get(first['id']).path
  for _ in range(server.limits.max_uploads):
    upload(client, songs / 'input.wav')
  assert not os.path.exists(path)
  response = client.post('/api/arrangements', json={
      'input': first['id'], 'target': first['id']})
  assert response.status_code == 404


def test_results_past_their_age_are_forgotten_and_deleted(served):
  client, server, songs = served
  song = upload(client, songs / 'input.wav').json()
  status = finish(client, {'input': song['id'], 'target': song['id']})
  folder = os.path.join(server.jobs.folder, status['id'])
  assert os.path.isdir(folder)
  kept, server.jobs.max_age_s = server.jobs.max_age_s, 0.0
  try:
    server.jobs.prune()
  finally:
    server.jobs.max_age_s = kept
  assert not os.path.exists(folder)
  assert client.get(status['files']['output.wav']).status_code == 404


HOLD_SCRATCH = """
import sys, time
from jingle_jax.web import scratch
print(scratch.Scratch(sys.argv[1]).path, flush=True)
time.sleep(600)
"""


def test_a_killed_servers_folder_goes_at_the_next_start(tmp_path):
  held = subprocess.Popen([sys.executable, '-c', HOLD_SCRATCH, tmp_path],
                          stdout=subprocess.PIPE, text=True)
  try:
    killed = held.stdout.readline().strip()
    mine = scratch_lib.Scratch(tmp_path)  # the other one is alive
    assert os.path.isdir(killed) and os.path.isdir(mine.path)
    held.send_signal(signal.SIGKILL)
    held.wait()
    assert os.path.isdir(killed)
    again = scratch_lib.Scratch(tmp_path)
    assert not os.path.exists(killed) and os.path.isdir(mine.path)
    mine.close()
    again.close()
    assert os.listdir(tmp_path) == []
  finally:
    held.kill()
    held.wait()


def test_the_command_refuses_an_unknown_checkpoint_in_one_line(run, tmp_path):
  workdir, _ = run
  result = subprocess.run(
      [sys.executable, '-m', 'jingle_jax.serve', '--workdir', workdir,
       '--checkpoint', '99', '--scratch-dir', tmp_path / 'scratch'],
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 1
  assert 'jingle_jax.serve: error:' in result.stderr
  assert 'no checkpoint 99' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'scratch')
