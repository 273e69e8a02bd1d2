"""The web app: one page (page.html, self-contained) and its JSON API.

  GET  /                              the page
  GET  /api/info                      the model, limits, checkpoints, music
  POST /api/songs                     an upload (multipart field `file`)
  POST /api/arrangements              {input, target, input_start,
                                       target_start, checkpoint} -> 202
  GET  /api/arrangements/ID           its place, stage and result
  GET  /api/arrangements/ID/NAME      input.wav, target.wav, output.wav or
                                      masks.png (?download=1 to save)

A request that cannot be served gets a 4xx (or 503 when the queue is full)
with {"error": message}.
"""

import contextlib
import dataclasses
import functools
import importlib.resources
import os
import shutil

import fastapi
from fastapi import responses
import numpy as np
from starlette.concurrency import run_in_threadpool

from jingle_jax.data import latents
from jingle_jax.web import jobs as jobs_lib
from jingle_jax.web import scratch as scratch_lib
from jingle_jax.web import songs as songs_lib
from jingle_jax.web.songs import RequestError

# What a multipart request may add to the file it carries.
_FORM_OVERHEAD = 64 << 10


@dataclasses.dataclass(frozen=True)
class Limits:
  max_upload_bytes: int = 100 << 20
  max_upload_seconds: float = 20 * 60.0
  max_queue: int = 16  # requests waiting; more get 503
  max_results: int = 32  # finished requests kept
  max_uploads: int = 64  # uploaded songs kept
  max_age_s: float = 3600.0  # how long results and uploads are kept


class Server:
  """What the app serves from: the arranger, this process's scratch folder
  under scratch_root, the songs and the queue."""

  def __init__(self, arranger, scratch_root, *, limits=Limits(),
               music_dir=None, default_checkpoint='best'):
    self.arranger, self.limits = arranger, limits
    self.default_checkpoint = str(default_checkpoint)
    self.scratch = scratch_lib.Scratch(scratch_root)
    try:
      self.songs = songs_lib.Songs(
          self.scratch.folder('songs'), clip_seconds=arranger.seconds,
          max_bytes=limits.max_upload_bytes,
          max_seconds=limits.max_upload_seconds,
          max_uploads=limits.max_uploads, max_age_s=limits.max_age_s,
          music_dir=music_dir)
      self.jobs = jobs_lib.Jobs(
          arranger, self.scratch.folder('results'),
          max_queue=limits.max_queue, max_results=limits.max_results,
          max_age_s=limits.max_age_s, housekeeping=[self.songs.prune])
    except BaseException:
      self.scratch.close()
      raise

  def warm_up(self, which) -> None:
    """Arranges a silent pair once, so that the first request compiles
    nothing."""
    silence = np.zeros(round(self.arranger.seconds * latents.SAMPLE_RATE),
                       np.float32)
    folder = self.scratch.folder('warm-up')
    self.arranger.arrange([silence, silence],
                          os.path.join(folder, 'out.wav'), which)
    shutil.rmtree(folder)

  def info(self) -> dict:
    weights = self.arranger.codec.weights
    return {
        'clip_seconds': self.arranger.seconds,
        'workdir': self.arranger.workdir,
        'checkpoints': self.jobs.checkpoints(),
        'default_checkpoint': self.default_checkpoint,
        'encodec_weights': weights,
        'random_weights': weights.startswith(latents.RANDOM_WEIGHTS),
        'max_upload_mb': self.limits.max_upload_bytes / 2**20,
        'max_upload_minutes': self.limits.max_upload_seconds / 60,
        'music': [song.summary() for song in self.songs.music]}

  def close(self) -> None:
    self.jobs.close()
    self.scratch.close()


def make_app(server: Server) -> fastapi.FastAPI:
  """The app over a server, which it closes when it shuts down."""

  @contextlib.asynccontextmanager
  async def lifespan(_):
    yield
    server.close()

  app = fastapi.FastAPI(title='Jingle-JAX', lifespan=lifespan,
                        docs_url=None, redoc_url=None, openapi_url=None)

  @app.exception_handler(RequestError)
  async def request_error(_, error: RequestError):
    return responses.JSONResponse({'error': str(error)}, error.status)

  @app.get('/', response_class=responses.HTMLResponse)
  def page():
    return _page()

  @app.get('/api/info')
  def info():
    return server.info()

  @app.post('/api/songs')
  async def upload(request: fastapi.Request):
    size = request.headers.get('content-length')
    if size is not None and int(size) > (server.limits.max_upload_bytes +
                                         _FORM_OVERHEAD):
      raise RequestError(413, f'the upload is larger than this server\'s '
                         f'limit of {server.limits.max_upload_bytes / 2**20:g}'
                         ' MB')
    form = await request.form(max_files=1, max_fields=1)
    upload = form.get('file')
    if upload is None or isinstance(upload, str):
      raise RequestError(400, 'no file: send it as the form field "file"')
    try:
      song = await run_in_threadpool(server.songs.upload, upload.file,
                                     upload.filename)
    finally:
      await upload.close()
    return song.summary()

  @app.post('/api/arrangements', status_code=202)
  def submit(request: dict = fastapi.Body(...)):
    missing = [key for key in ('input', 'target') if key not in request]
    if missing:
      raise RequestError(422, f'the request lacks {" and ".join(missing)}')
    try:
      starts = [float(request.get(key, 0.0))
                for key in ('input_start', 'target_start')]
    except (TypeError, ValueError):
      raise RequestError(422, 'input_start and target_start are seconds, '
                         'as numbers') from None
    job = server.jobs.submit(
        server.songs.get(request['input']),
        server.songs.get(request['target']), *starts,
        request.get('checkpoint', server.default_checkpoint))
    return server.jobs.status(job)

  @app.get('/api/arrangements/{job_id}')
  def status(job_id: str):
    return server.jobs.status(server.jobs.get(job_id))

  @app.get('/api/arrangements/{job_id}/{name}')
  def result_file(job_id: str, name: str, download: bool = False):
    path = server.jobs.path(server.jobs.get(job_id), name)
    return responses.FileResponse(
        path, filename=f'arrangement-{job_id}-{name}' if download else None)

  return app


@functools.cache
def _page() -> str:
  return importlib.resources.files('jingle_jax.web').joinpath(
      'page.html').read_text(encoding='utf-8')
