"""Output latents of a trained model, for dataset pairs or one given pair.

  python -m jingle_jax.sample --workdir W [--checkpoint best|latest|STEP] \
      [--num-samples 4] [--shuffle-targets] [--split val] --out-dir O
  python -m jingle_jax.sample --workdir W --input IN.npy --target TGT.npy \
      --out-dir O

The model runs in evaluation mode (no dropout, no noise). Files hold raw
EnCodec latents [frames, 128] float32, ready for precompute.torch_decode; the
model sees them raw (the seed recipe) or, with config.data.normalise_latents,
normalised with the dataset's training statistics (config.data.dir of the run,
or --data-dir). Masks are [frames, 128] in [0, 1].

Dataset pairs: O/sample_NNN/ holds input.npy, target.npy, output.npy,
input_mask.npy, target_mask.npy and masks.png
(jingle_jax.inference.plots.mask_figure); O/samples.json records the
checkpoint and its step (the number its directory and the training logs
use) and, per sample, the song and first
frame of its input and target windows and its mask statistics. Without
--shuffle-targets a sample is the split's matched pair (the target follows
the input in the same song); with it, each input gets the target window of a
random pair of another song.

One given pair: O/output.npy, O/input_mask.npy, O/target_mask.npy, masks.png.

--wav also writes each latent .npy decoded to 24 kHz audio beside it
(NAME.wav), with the JAX EnCodec decoder of the run's dataset (or
--data-dir's): no torch.
"""

import functools
import json
import os

from absl import app
from absl import flags
import numpy as np

from jingle_jax import cli
from jingle_jax.core import files
from jingle_jax.data import input_pipeline
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import samples
from jingle_jax.inference import trained_model
from jingle_jax.training import losses
from jingle_jax.training import run_dir

MASK_STATISTICS = ('complementarity', 'overlap', 'coverage',
                   'input_mask_mean', 'target_mask_mean')


class PairError(ValueError):
  """A given --input/--target pair that cannot be used; names the file."""


def choose_pairs(pairs, num_samples: int, shuffle_targets: bool, seed: int):
  """(input pairs, target pairs): the first pairs of the split, and their
  matched targets or, shuffled, targets of random pairs of other songs."""
  inputs = np.arange(min(num_samples, len(pairs)))
  if not shuffle_targets:
    return inputs, inputs
  songs = pairs.index[:, 0]
  if len(np.unique(songs)) < 2:
    raise ValueError('--shuffle-targets needs pairs from two songs or more')
  rng = np.random.default_rng(seed)
  return inputs, np.array([rng.choice(np.flatnonzero(songs != songs[i]))
                           for i in inputs])


def sample_dataset(workdir, out_dir, *, which='best', num_samples=4,
                   shuffle_targets=False, split='val', batch_size=8,
                   data_dir=None, wav=False) -> dict:
  """Writes the samples of a split and samples.json; returns its content."""
  dataset = trained_model.run_dataset(workdir, data_dir)
  decoder_params = encodec_decoding.read(dataset) if wav else None
  model = trained_model.TrainedModel.load(workdir, which, dataset=dataset)
  pairs = input_pipeline.dataset_pairs(
      model.config.data, model.config.num_frames, dataset, split)
  inputs, targets = choose_pairs(pairs, num_samples, shuffle_targets,
                                 model.config.seed)
  batch = pairs.read(inputs, targets)
  run = model.run(batch['input'], batch['target'], batch_size,
                  functools.partial(pairs.fault_error, inputs=inputs,
                                    targets=targets))
  records, clips = [], {}
  for i, (input_pair, target_pair) in enumerate(zip(inputs, targets)):
    name = f'sample_{i:03d}'
    arrays = {key: values[i] for key, values in run.items()}
    record = {'name': name,
              'input': samples.window_record(pairs, input_pair, 0),
              'target': samples.window_record(pairs, target_pair,
                                              pairs.window)}
    title = f'{record["input"]["song"]} + {record["target"]["song"]}'
    clips.update(samples.write_pair(os.path.join(out_dir, name),
                                    model.space, arrays, saved=arrays,
                                    title=title))
    statistics = losses.mask_metrics(arrays['input_mask'][None],
                                     arrays['target_mask'][None])
    record.update({k: float(statistics[k]) for k in MASK_STATISTICS})
    records.append(record)
  samples.save_wavs(decoder_params, clips)
  summary = {'workdir': os.path.abspath(workdir),
             'data_dir': os.path.dirname(os.path.abspath(
                 dataset.manifest_path)),
             'checkpoint': str(which),
             'checkpoint_step': model.step, 'split': split,
             'shuffle_targets': shuffle_targets, 'samples': records}
  files.write_text(os.path.join(out_dir, 'samples.json'),
                   json.dumps(summary, indent=2) + '\n')
  return summary


def read_clip(path, flag: str, latent_dim: int, max_frames: int):
  """A raw latent clip [frames, latent_dim] from a .npy file, as float32."""
  try:
    clip = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise PairError(f'{flag} {path}: cannot be read as .npy: {e}') from None
  if clip.ndim != 2 or clip.shape[1] != latent_dim:
    raise PairError(f'{flag} {path}: shape {clip.shape}, expected '
                    f'[frames, {latent_dim}]')
  if not 2 <= clip.shape[0] <= max_frames:
    raise PairError(f'{flag} {path}: {clip.shape[0]} frames, expected 2 to '
                    f'{max_frames} (config.model.max_len)')
  if not np.issubdtype(clip.dtype, np.floating):
    raise PairError(f'{flag} {path}: dtype {clip.dtype} is not a float type')
  if not np.all(np.isfinite(clip)):
    raise PairError(f'{flag} {path}: holds non-finite values')
  return clip.astype(np.float32)


def sample_pair(workdir, input_path, target_path, out_dir, *, which='best',
                data_dir=None, wav=False) -> int:
  """Runs one given pair; writes output and masks. Returns the step."""
  config = run_dir.read_config(workdir)  # checks the files before loading
  dim, max_frames = config.model.latent_dim, config.model.max_len
  raw_input = read_clip(input_path, '--input', dim, max_frames)
  raw_target = read_clip(target_path, '--target', dim, max_frames)
  if len(raw_input) != len(raw_target):
    raise PairError(f'--input {input_path} has {len(raw_input)} frames, '
                    f'--target {target_path} {len(raw_target)}; they must '
                    'match')
  dataset = (latents.LatentDataset(data_dir or config.data.dir)
             if wav or config.data.normalise_latents else None)
  decoder_params = encodec_decoding.read(dataset) if wav else None
  model = trained_model.TrainedModel.load(workdir, which, dataset=dataset)
  samples.save_wavs(decoder_params, samples.write_pair(
      out_dir, model.space, model.run_pair(raw_input, raw_target),
      saved=('output', 'input_mask', 'target_mask')))
  return model.step


def define_flags():
  """The command line (defined only when run as a program)."""
  cli.define_checkpoint_flags()
  cli.define_pair_flags()
  flags.DEFINE_integer('num-samples', 4, 'Pairs of the split to sample.',
                       lower_bound=1)
  flags.DEFINE_bool('shuffle-targets', False,
                    'Pair each input with the target of another song.')
  flags.DEFINE_string('input', None,
                      'Raw input latents [frames, 128] .npy (with --target).')
  flags.DEFINE_string('target', None,
                      'Raw target latents [frames, 128] .npy (with --input).')
  flags.DEFINE_string('out-dir', None, 'Where the samples are written.')
  flags.DEFINE_bool('wav', False, 'Also decode the latents to .wav beside '
                    'their .npy (the dataset\'s decoder weights, no torch).')


def run(flag_values) -> None:
  if (flag_values.input is None) != (flag_values.target is None):
    raise app.UsageError('--input and --target go together')
  out_dir = flag_values['out-dir'].value
  which = cli.checkpoint_choice(flag_values.checkpoint)
  if flag_values.input is not None:
    step = sample_pair(flag_values.workdir, flag_values.input,
                       flag_values.target, out_dir, which=which,
                       data_dir=flag_values['data-dir'].value,
                       wav=flag_values.wav)
    print(f'checkpoint step {step}: {out_dir}/output.npy')
    return
  summary = sample_dataset(
      flag_values.workdir, out_dir, which=which,
      num_samples=flag_values['num-samples'].value,
      shuffle_targets=flag_values['shuffle-targets'].value,
      split=flag_values.split, batch_size=flag_values['batch-size'].value,
      data_dir=flag_values['data-dir'].value, wav=flag_values.wav)
  for record in summary['samples']:
    print(os.path.join(out_dir, record['name']))


if __name__ == '__main__':
  cli.run('jingle_jax.sample', run, define_flags,
          required=['workdir', 'out-dir'])
