"""Reads every value of a latent dataset, on several processes.

  python -m jingle_jax.verify DATA_DIR [--workers N]

Opening a dataset checks only its manifest and its files' sizes, and
training checks each batch's values as it reads them; this reads all of
them: every song's latents (finite, within latents.OUTLIER_STDS of the
training mean) and its audio when kept (finite), and the files' headers.
It prints one line per bad song and exits with status 1 when there is one.
torch-free.
"""

import concurrent.futures
import os

from absl import app
from absl import flags
import tqdm

from jingle_jax import cli
from jingle_jax.data import latents

_songs = []  # the songs of the dataset a worker process checks


def all_songs(dataset) -> list[latents.Song]:
  return [song for split in latents.SPLITS for song in dataset.songs(split)]


def _open(path) -> None:
  _songs[:] = all_songs(latents.LatentDataset(path))


def _problem(index: int) -> str | None:
  """What is wrong with song `index`, in one line, or None."""
  try:
    _songs[index].verify()
  except (latents.LatentDataError, OSError) as e:
    return str(e)
  return None


def verify(path, workers: int) -> tuple[list[latents.Song], list[str]]:
  """(the dataset's songs, a line for each bad one)."""
  songs = all_songs(latents.LatentDataset(path))
  chunk = max(1, min(64, len(songs) // (4 * workers)))
  with concurrent.futures.ProcessPoolExecutor(
      workers, initializer=_open, initargs=(path,)) as pool:
    problems = pool.map(_problem, range(len(songs)), chunksize=chunk)
    return songs, [problem for problem in tqdm.tqdm(
        problems, total=len(songs), unit='song', dynamic_ncols=True)
                   if problem]


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_integer('workers', os.cpu_count(), 'Processes that read.',
                       lower_bound=1)


def run(flag_values, arguments) -> None:
  if len(arguments) != 1:
    raise app.UsageError('expected one argument: the dataset directory')
  songs, problems = verify(arguments[0], flag_values.workers)
  for problem in problems:
    print(problem, flush=True)
  if problems:
    raise ValueError(f'{len(problems)} of {len(songs)} songs are bad')
  hours = sum(song.duration for song in songs) / 3600
  print(f'{arguments[0]}: {len(songs)} songs, {hours:.2f} hours: every value '
        'finite and within the bound')


if __name__ == '__main__':
  cli.run('jingle_jax.verify', run, define_flags, takes_arguments=True)
