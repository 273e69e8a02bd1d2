"""A local web app over a trained model: two songs in, an arrangement out.

  python -m jingle_jax.serve --workdir W [--checkpoint best|latest|STEP] \
      [--port 8000] [--host 127.0.0.1] [--music DIR] \
      [--data-dir LATENTS] [--encodec-checkpoint PATH | --random-encodec SEED]

Open the address it prints. The page uploads two songs (any format
`arrange` reads) or picks them from --music, chooses where each clip
starts and a checkpoint, queues the request and shows the clips, the
output, the masks and a download link. The model and EnCodec are loaded
once; requests run one at a time, in order. Uploads and results live in a
folder of this process under --scratch-dir, removed on exit (and, after a
server that was killed, by the next start).
"""

import atexit
import os
import tempfile
import time

from absl import flags
from absl import logging

from jingle_jax import arrange
from jingle_jax import cli

_LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')


def define_flags():
  """The command line (defined only when run as a program)."""
  cli.define_checkpoint_flags()
  cli.define_encodec_flags()
  flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on; other '
                      'than this machine\'s own, anyone who reaches it can '
                      'use the model.')
  flags.DEFINE_integer('port', 8000, 'Port to listen on.', lower_bound=0)
  flags.DEFINE_string('music', None, 'Folder of songs the page offers '
                      'besides uploads.')
  flags.DEFINE_float('max-upload-mb', 100.0, 'Largest upload.',
                     lower_bound=0.01)
  flags.DEFINE_float('max-upload-minutes', 20.0, 'Longest uploaded song.',
                     lower_bound=0.01)
  flags.DEFINE_integer('max-queue', 16, 'Requests that may wait; more are '
                       'turned away (HTTP 503).', lower_bound=1)
  flags.DEFINE_integer('max-results', 32, 'Finished arrangements kept.',
                       lower_bound=1)
  flags.DEFINE_float('keep-minutes', 60.0, 'How long uploads and results '
                     'are kept.', lower_bound=0.1)
  flags.DEFINE_string('scratch-dir', os.path.join(tempfile.gettempdir(),
                                                  'jingle-jax-serve'),
                      'Where the server keeps uploads and results, in a '
                      'folder of its own.')


def run(flag_values) -> None:
  # pylint: disable=g-import-not-at-top  (the web stack, for this command only)
  import uvicorn
  from jingle_jax.web import app as app_lib
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  which = cli.checkpoint_choice(flag_values.checkpoint)
  if flag_values.host not in _LOCAL_HOSTS:
    logging.warning('listening on %s: anyone who reaches this address can '
                    'upload songs and use the model', flag_values.host)
  arranger = arrange.Arranger(
      flag_values.workdir, data_dir=flag_values['data-dir'].value,
      checkpoint=flag_values['encodec-checkpoint'].value,
      random_seed=flag_values['random-encodec'].value,
      device=flag_values.device)
  step = arranger.model(which).step
  keep_s = flag_values['keep-minutes'].value * 60
  limits = app_lib.Limits(
      max_upload_bytes=int(flag_values['max-upload-mb'].value * 2**20),
      max_upload_seconds=flag_values['max-upload-minutes'].value * 60,
      max_queue=flag_values['max-queue'].value,
      max_results=flag_values['max-results'].value, max_age_s=keep_s)
  server = app_lib.Server(arranger, flag_values['scratch-dir'].value,
                          limits=limits, music_dir=flag_values.music,
                          default_checkpoint=flag_values.checkpoint)
  atexit.register(server.scratch.close)
  started = time.perf_counter()
  server.warm_up(which)
  logging.warning('arranged a silent pair in %.1f s (compiling)',
                  time.perf_counter() - started)
  host = f'[{flag_values.host}]' if ':' in flag_values.host else (
      flag_values.host)
  print(f'checkpoint {flag_values.checkpoint} (step {step}) of '
        f'{arranger.workdir}: serving http://{host}:{flag_values.port}/ '
        '(Ctrl-C stops)', flush=True)
  uvicorn.run(app_lib.make_app(server), host=flag_values.host,
              port=flag_values.port, log_level='warning')


if __name__ == '__main__':
  cli.run('jingle_jax.serve', run, define_flags, required=['workdir'],
          runs_torch=True)
