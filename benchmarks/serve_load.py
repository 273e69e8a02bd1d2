"""The web app against the `arrange` command, on the same two songs.

  python -m benchmarks.serve_load --workdir W --input A --target B \
      [--clients 4] [--input-start S] [--target-start S]

Times, in order: `python -m jingle_jax.arrange` (the whole command, as a
person runs it); then `python -m jingle_jax.serve` in its own process,
started and warmed up, and over HTTP: one request alone (from submitting
to its result; the uploads before it are timed apart), then --clients
clients at once, each uploading both songs and arranging them. Prints one
JSON line per measurement; checks that every result equals the first.
"""

import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import soundfile


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _arrange_command(args, out_dir) -> float:
  start = time.perf_counter()
  subprocess.run(
      [sys.executable, '-m', 'jingle_jax.arrange', '--workdir', args.workdir,
       '--input', args.input, '--target', args.target,
       '--input-start', str(args.input_start), '--target-start',
       str(args.target_start), '--out', os.path.join(out_dir, 'cli.wav')],
      check=True, capture_output=True)
  return time.perf_counter() - start


def _upload(client, path) -> tuple[str, float]:
  start = time.perf_counter()
  with open(path, 'rb') as f:
    response = client.post('/api/songs', files={
        'file': (os.path.basename(path), f)})
  response.raise_for_status()
  return response.json()['id'], time.perf_counter() - start


def _arrange_request(client, args, input_id, target_id):
  """(seconds from submitting to the result, the output's samples)."""
  start = time.perf_counter()
  status = client.post('/api/arrangements', json={
      'input': input_id, 'target': target_id,
      'input_start': args.input_start, 'target_start': args.target_start})
  status.raise_for_status()
  status = status.json()
  while status['stage'] != 'done':
    if status['error']:
      raise RuntimeError(status['error'])
    time.sleep(0.05)
    status = client.get(f'/api/arrangements/{status["id"]}').json()
  seconds = time.perf_counter() - start
  output = client.get(status['files']['output.wav'])
  output.raise_for_status()
  with tempfile.NamedTemporaryFile(suffix='.wav') as f:
    f.write(output.content)
    f.flush()
    return seconds, soundfile.read(f.name)[0]


def _one_client(base, args):
  with httpx.Client(base_url=base, timeout=600) as client:
    start = time.perf_counter()
    input_id, _ = _upload(client, args.input)
    target_id, _ = _upload(client, args.target)
    _, output = _arrange_request(client, args, input_id, target_id)
    return time.perf_counter() - start, output


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--input', required=True)
  parser.add_argument('--target', required=True)
  parser.add_argument('--input-start', type=float, default=0.0)
  parser.add_argument('--target-start', type=float, default=0.0)
  parser.add_argument('--clients', type=int, default=4)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as out_dir:
    print(json.dumps({'arrange_command_s': round(
        _arrange_command(args, out_dir), 2)}), flush=True)
    expected, _ = soundfile.read(os.path.join(out_dir, 'cli.wav'))
    port = _free_port()
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, '-m', 'jingle_jax.serve', '--workdir', args.workdir,
         '--port', str(port), '--scratch-dir', out_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}'
    try:
      with httpx.Client(base_url=base, timeout=600) as client:
        while True:
          try:
            client.get('/api/info').raise_for_status()
            break
          except httpx.TransportError:
            if server.poll() is not None:
              raise RuntimeError('the server ended') from None
            time.sleep(0.2)
        print(json.dumps({'server_ready_s': round(
            time.perf_counter() - start, 2)}), flush=True)
        input_id, input_s = _upload(client, args.input)
        target_id, target_s = _upload(client, args.target)
        seconds, output = _arrange_request(client, args, input_id, target_id)
        np.testing.assert_allclose(output, expected, atol=1e-6)
        print(json.dumps({'uploads_s': round(input_s + target_s, 2),
                          'one_request_s': round(seconds, 2)}), flush=True)
      start = time.perf_counter()
      with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(lambda _: _one_client(base, args),
                                range(args.clients)))
      total = time.perf_counter() - start
      for _, output in results:
        np.testing.assert_allclose(output, expected, atol=1e-6)
      print(json.dumps({'clients': args.clients, 'all_done_s': round(total, 2),
                        'each_client_s': [round(s, 2) for s, _ in results],
                        'results_equal_arrange': True}), flush=True)
    finally:
      server.terminate()
      server.wait(timeout=120)


if __name__ == '__main__':
  main()
