"""Arrangement requests, queued for the accelerator: one worker thread runs
them in order, each into a folder of its own; finished ones are kept for
max_age_s, at most max_results of them."""

import collections
import dataclasses
import os
import queue
import secrets
import shutil
import threading
import time
import traceback

from absl import logging

from jingle_jax.core import errors
from jingle_jax.training import run_dir
from jingle_jax.web import songs
from jingle_jax.web.songs import RequestError

# A request's stages in order, and what the page calls them.
STAGES = ('queued', 'loading', 'reading', 'encoding', 'arranging',
          'decoding', 'writing', 'done')
PRUNE_EVERY_S = 60.0
# The files of a finished request, as served.
FILES = {'input.wav': 'out.input.wav', 'target.wav': 'out.target.wav',
         'output.wav': 'out.wav', 'masks.png': 'out.png'}


@dataclasses.dataclass
class Job:
  id: str
  input: object  # songs.Song
  target: object
  input_start: float
  target_start: float
  which: object  # best, latest or a step
  folder: str
  stage: str = 'queued'
  error: str | None = None
  facts: list | None = None
  finished: float | None = None  # time.monotonic()
  seconds: float | None = None  # from leaving the queue to the result


def checkpoint_choice(text) -> object:
  """A request's checkpoint: best, latest or a step number."""
  text = str(text)
  if text in ('best', 'latest'):
    return text
  if text.isdigit():
    return int(text)
  raise RequestError(422, f'checkpoint must be best, latest or a step '
                     f'number, not {text[:40]!r}')


class Jobs:
  """The queue and its worker over an arrange.Arranger."""

  def __init__(self, arranger, folder, *, max_queue=16, max_results=32,
               max_age_s=3600.0, housekeeping=()):
    self.arranger, self.folder = arranger, folder
    # Pruning, run after each request and at least every PRUNE_EVERY_S.
    self._housekeeping = [self.prune, *housekeeping]
    self.max_queue, self.max_results = max_queue, max_results
    self.max_age_s = max_age_s
    self._jobs: dict[str, Job] = {}
    self._waiting: collections.deque[Job] = collections.deque()
    self._lock = threading.Lock()
    self._queue: queue.Queue = queue.Queue()
    self._worker = threading.Thread(target=self._work, name='arranger',
                                    daemon=True)
    self._worker.start()

  def checkpoints(self) -> list[str]:
    """The choices a request has: best, latest and every step."""
    steps = run_dir.checkpoint_steps(self.arranger.workdir)
    return ['best', 'latest'] + [str(step) for step in steps]

  def submit(self, input_song, target_song, input_start, target_start,
             which) -> Job:
    which = checkpoint_choice(which)
    if which not in ('best', 'latest'):
      steps = run_dir.checkpoint_steps(self.arranger.workdir)
      if which not in steps:
        raise RequestError(404, f'no checkpoint {which} in this run; '
                           f'steps: {", ".join(map(str, steps))}')
    clip = self.arranger.seconds
    for part, song, start in (('input', input_song, input_start),
                              ('target', target_song, target_start)):
      if song.seconds < clip:
        raise RequestError(422, f'{part}: {song.name} is {song.seconds:.2f} '
                           f's long; the model\'s clips are {clip:g} s')
      if not 0 <= start <= song.seconds - clip:
        raise RequestError(422, (
            f'{part}: {song.name} is {song.seconds:.2f} s long, so a '
            f'{clip:g} s clip starts between 0 and '
            f'{song.seconds - clip:.2f} s, not at {start:g} s'))
    job_id = secrets.token_hex(8)
    job = Job(job_id, input_song, target_song, float(input_start),
              float(target_start), which, os.path.join(self.folder, job_id))
    with self._lock:
      if len(self._waiting) >= self.max_queue:
        raise RequestError(503, f'{len(self._waiting)} requests are waiting '
                           'already: try again in a minute')
      self._jobs[job.id] = job
      self._waiting.append(job)
    self._queue.put(job)
    return job

  def get(self, job_id) -> Job:
    with self._lock:
      job = self._jobs.get(str(job_id))
    if job is None:
      raise RequestError(404, f'no arrangement {str(job_id)[:40]!r}; '
                         f'results are kept for {self.max_age_s / 60:g} '
                         'minutes')
    return job

  def status(self, job: Job) -> dict:
    with self._lock:
      ahead = next((i for i, waiting in enumerate(self._waiting)
                    if waiting is job), None)
    status = {'id': job.id, 'stage': job.stage,
              'progress': STAGES.index(job.stage) / (len(STAGES) - 1),
              'place': ahead, 'error': job.error}
    if job.stage == 'done':
      status.update(facts=job.facts, seconds=round(job.seconds, 2),
                    files={name: f'/api/arrangements/{job.id}/{name}'
                           for name in FILES})
    return status

  def path(self, job: Job, name: str) -> str:
    if job.stage != 'done' or name not in FILES:
      raise RequestError(404, f'no file {name[:40]!r} of arrangement '
                         f'{job.id}')
    return os.path.join(job.folder, FILES[name])

  def _work(self) -> None:
    while True:
      try:
        job = self._queue.get(timeout=PRUNE_EVERY_S)
      except queue.Empty:
        self._tidy()
        continue
      if job is None:
        return
      started = time.monotonic()
      try:
        self._arrange(job)
        job.seconds = time.monotonic() - started
        job.stage = 'done'  # last: a client may look at any moment
      except (RequestError, ValueError, OSError, errors.UserError) as e:
        # the songs by the names the person knows, not where they are kept
        job.error = songs.named(songs.named(e, job.input.path, job.input.name),
                                job.target.path, job.target.name)
      except Exception as e:  # pylint: disable=broad-except
        logging.error('arrangement %s failed:\n%s', job.id,
                      traceback.format_exc())
        job.error = f'the server failed to arrange this pair: {e!r}'
      finally:
        with self._lock:
          self._waiting.remove(job)
        job.finished = time.monotonic()
        self._tidy()

  def _tidy(self) -> None:
    for prune in self._housekeeping:
      prune()

  def _arrange(self, job: Job) -> None:
    arranger = self.arranger
    job.stage = 'loading'
    arranger.model(job.which)
    job.stage = 'reading'
    clips = arranger.read_clips(job.input.path, job.target.path,
                                job.input_start, job.target_start)
    os.makedirs(job.folder)
    title = f'{job.input.name} + {job.target.name}'

    def progress(stage):
      job.stage = stage

    step = arranger.arrange(clips, os.path.join(job.folder, FILES[
        'output.wav']), job.which, title, progress)
    job.facts = arranger.facts(step, job.input.name, job.input_start,
                               job.target.name, job.target_start)

  def prune(self) -> None:
    """Forgets finished requests past their age, then the oldest beyond
    max_results, and deletes their files."""
    with self._lock:
      expired = songs.past_keeping(
          [job for job in self._jobs.values() if job.finished is not None],
          lambda job: job.finished, self.max_age_s, self.max_results)
      for job in expired:
        del self._jobs[job.id]
    for job in expired:
      shutil.rmtree(job.folder, ignore_errors=True)

  def close(self) -> None:
    self._queue.put(None)
    self._worker.join(timeout=60)
