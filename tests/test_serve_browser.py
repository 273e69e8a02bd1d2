"""The web app in a real browser: Chromium (the system's), driven by
Playwright, against `python -m jingle_jax.serve` in its own process.

Skipped without Playwright or a Chromium, unless JINGLE_BROWSER_REQUIRED=1
(as in CI), where that fails. JINGLE_SCREENSHOT=PATH keeps the screenshot.
"""

import importlib.util
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from jingle_jax.data import latents
import small_run
import training_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')


def _browser() -> str:
  required = os.environ.get('JINGLE_BROWSER_REQUIRED') == '1'
  if importlib.util.find_spec('playwright') is None:
    if required:
      pytest.fail('Playwright is not installed')
    pytest.skip('Playwright is not installed')
  found = next(filter(None, map(shutil.which, BROWSERS)), None)
  if found is None:
    if required:
      pytest.fail(f'none of {BROWSERS} is on PATH')
    pytest.skip(f'none of {BROWSERS} is on PATH')
  return found


def _wait_for_line(process, text, timeout):
  """Reads the process's output until a line holds `text`."""
  lines = queue.Queue()
  threading.Thread(target=lambda: [lines.put(line) for line in
                                   process.stdout], daemon=True).start()
  seen, deadline = [], time.monotonic() + timeout
  while not any(text in line for line in seen):
    try:
      seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
    except queue.Empty:
      pytest.fail(f'no {text!r} in {timeout} s: {"".join(seen)}')
    if process.poll() is not None and lines.empty():
      pytest.fail(f'the server ended: {"".join(seen)}')


# Resolves once every player knows its duration and the picture is drawn.
MEDIA = """async () => {
  const players = [...document.querySelectorAll('audio')];
  await Promise.all(players.map((audio) => audio.readyState >= 1 ? null :
      new Promise((resolve, reject) => {
        audio.addEventListener('loadedmetadata', resolve);
        audio.addEventListener('error', reject);
        audio.load();
      })));
  const masks = document.getElementById('masks');
  if (!masks.complete) await new Promise((resolve) => masks.onload = resolve);
  return {durations: players.map((audio) => audio.duration),
          masks: masks.naturalWidth};
}"""


def test_two_songs_arranged_in_chromium(tmp_path_factory, tmp_path):
  # pylint: disable-next=g-import-not-at-top
  from playwright.sync_api import sync_playwright
  browser_path = _browser()
  workdir, songs = small_run.trained_run(tmp_path_factory)
  scratch, port = tmp_path / 'scratch', training_runs.free_port()
  server = subprocess.Popen(
      [sys.executable, '-m', 'jingle_jax.serve', '--workdir', workdir,
       '--port', str(port), '--scratch-dir', scratch],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    base = f'http://127.0.0.1:{port}/'
    _wait_for_line(server, f'serving {base}', timeout=180)
    with sync_playwright() as playwright:
      browser = playwright.chromium.launch(executable_path=browser_path,
                                           args=['--no-sandbox'])
      page = browser.new_page(viewport={'width': 1100, 'height': 1000})
      requested = []
      page.on('request', lambda request: requested.append(request.url))
      page.goto(base)
      page.wait_for_selector('#checkpoint option', state='attached')
      assert 'random' in page.inner_text('#warning')
      page.set_input_files('#input-file', str(songs / 'input.wav'))
      page.set_input_files('#target-file', str(songs / 'target.mp3'))
      page.wait_for_function(
          "['input', 'target'].every((part) => document.getElementById("
          "`${part}-info`).textContent.includes('long'))")
      page.fill('#input-start', '0.5')
      page.click('#arrange')
      page.wait_for_selector('#result', state='visible', timeout=180_000)
      media = page.evaluate(MEDIA)
      clip = 8 * latents.HOP / latents.SAMPLE_RATE  # the run's 8 frames
      assert media['durations'] == pytest.approx([clip] * 3, abs=1e-3)
      assert media['masks'] > 0
      assert 'from 0.5 s' in page.inner_text('#facts')
      assert page.is_hidden('#error')
      page.screenshot(path=str(tmp_path / 'serve.png'), full_page=True)
      browser.close()
    assert all(url.startswith(base) for url in requested), requested
    if os.environ.get('JINGLE_SCREENSHOT'):
      shutil.copy(tmp_path / 'serve.png', os.environ['JINGLE_SCREENSHOT'])
  finally:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
  assert os.listdir(scratch) == []  # uploads and results went with it
