"""The trained creative agent against the fixed masking baselines.

  python -m jingle_jax.evaluate --workdir W [--checkpoint best|latest|STEP] \
      [--split val] [--batch-size 8] --out-dir O

One row per method on every matched pair of the split: `creative_agent`,
`none` (nothing masked) and the five baselines of SPEC 4.6. Writes
O/metrics.json (method -> metric -> value), O/metrics.md (the same as a
Markdown table) and O/training_curves.png from W/metrics.jsonl.

How the methods are run. Every row uses the checkpoint's trained cascade in
evaluation mode (no dropout, no anti-cheating noise); only the masks differ.
`creative_agent` is the trained model as it is. A baseline is that model with
use_creative_agent=False and fixed_masking=NAME, which computes what the
agent-off model computes (the fixed masks applied without RMS restoration, as
the seed applied them before the model), with the agent's trained cascade
weights (the parameter tree is the agent's minus `creative_agent`). The seed
compares fixed temporal masking, the creative agent and no masking around the
same generator; holding its weights fixed as well isolates what the agent
learns, the masks, and needs no extra training runs. The mask columns
(complementarity, means, coverage) do not depend on weights at all, so they
are the baselines' definitions exactly. The output columns carry a caveat:
the cascade was trained on learned masks, so a baseline's masked clips are
outside its training distribution. A generator trained on a baseline's own
masks is a separate training run (model.use_creative_agent=False,
model.fixed_masking=NAME) and is not part of this table.

All metrics are computed in the model's space, where the training loss lives:
raw latents under the seed recipe, normalised with the dataset's per-channel
mean and std with config.normalise_latents. `rms_error_input` is the
training loss's `recon_input` term, per pair. Rhythm
transfer compares loudness envelopes: per frame the RMS over channels,
smoothed by a moving average of ENVELOPE_FRAMES; the Pearson correlation of
the output's envelope with the input's and with the target's; a pair's rhythm
counts as preserved when the input correlation is above RHYTHM_THRESHOLD.
Metrics are per pair, then averaged over pairs (`rhythm_preserved` is thus a
share).
"""

import copy
import functools
import json
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jingle_jax import baselines
from jingle_jax import checkpoints
from jingle_jax import input_pipeline
from jingle_jax import latents
from jingle_jax import losses
from jingle_jax import run_log
from jingle_jax import train_step

METHODS = ('creative_agent', 'none') + tuple(baselines.BASELINES)
ENVELOPE_FRAMES = 5  # 67 ms at 75 frames/s: smooths jitter, keeps 8 onsets/s
RHYTHM_THRESHOLD = 0.3

# Metric name, table heading, format; in table order.
COLUMNS = (
    ('complementarity', 'Complementarity', '{:.1%}'),
    ('input_mask_mean', 'Input mask', '{:.3f}'),
    ('target_mask_mean', 'Target mask', '{:.3f}'),
    ('coverage', 'Coverage', '{:.3f}'),
    ('rms_error_input', 'RMS err. input', '{:.3f}'),
    ('rms_error_target', 'RMS err. target', '{:.3f}'),
    ('rhythm_corr_input', 'Rhythm corr. input', '{:+.3f}'),
    ('rhythm_corr_target', 'Rhythm corr. target', '{:+.3f}'),
    ('rhythm_preserved', 'Rhythm preserved', '{:.0%}'),
)


def envelope(clip):
  """[..., T, D] -> [..., T]: per-frame RMS over channels, smoothed.

  The moving average pads with the edge values, so the clip's ends are not
  pulled towards zero.
  """
  frame_rms = jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(clip, jnp.float32)),
                               -1))
  half = ENVELOPE_FRAMES // 2
  pad = [(0, 0)] * (frame_rms.ndim - 1) + [(half, half)]
  padded = jnp.pad(frame_rms, pad, mode='edge')
  frames = frame_rms.shape[-1]
  return sum(padded[..., i:i + frames]
             for i in range(ENVELOPE_FRAMES)) / ENVELOPE_FRAMES


def pearson(a, b):
  """Correlation of two [T] series; 0 when either is constant."""
  a, b = a - jnp.mean(a), b - jnp.mean(b)
  norm = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
  return jnp.where(norm > 0, jnp.sum(a * b) / jnp.maximum(norm, 1e-30), 0.0)


def pair_metrics(output, inputs, targets, input_mask, target_mask):
  """Metrics of one pair; every argument is [T, D]."""
  masks = losses.mask_metrics(input_mask[None], target_mask[None])
  output_envelope = envelope(output)
  rhythm_input = pearson(output_envelope, envelope(inputs))
  metrics = {name: masks[name] for name in (
      'complementarity', 'overlap', 'coverage', 'input_mask_mean',
      'target_mask_mean')}
  metrics.update(
      rms_error_input=losses.rms(output - inputs),
      rms_error_target=losses.rms(output - targets),
      rhythm_corr_input=rhythm_input,
      rhythm_corr_target=pearson(output_envelope, envelope(targets)),
      rhythm_preserved=(rhythm_input > RHYTHM_THRESHOLD).astype(jnp.float32))
  return metrics


batch_metrics = jax.vmap(pair_metrics)  # [B, T, D] arguments -> {name: [B]}


def mean_over_pairs(per_pair: list[dict]) -> dict[str, float]:
  """Concatenates per-batch {name: [B]} dicts and averages each metric."""
  return {name: float(np.mean(np.concatenate(
      [np.asarray(batch[name]) for batch in per_pair])))
          for name in per_pair[0]}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
  """One row per method (in the dict's order), COLUMNS as columns."""
  lines = ['| Method | ' + ' | '.join(h for _, h, _ in COLUMNS) + ' |',
           '|---|' + '---:|' * len(COLUMNS)]
  for method, metrics in results.items():
    cells = [fmt.format(metrics[name]) for name, _, fmt in COLUMNS]
    lines.append(f'| `{method}` | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def parse_checkpoint(text: str):
  """--checkpoint: 'best', 'latest' or a step number."""
  if text in ('best', 'latest'):
    return text
  try:
    return int(text)
  except ValueError:
    raise app.UsageError(f'--checkpoint must be best, latest or a step '
                         f'number, not {text!r}') from None


def split_pairs(config, data_dir, split: str) -> input_pipeline.Pairs:
  """The pairs of a split, cut and normalised as in training."""
  pairs = input_pipeline.split_pairs(config, latents.LatentDataset(data_dir),
                                     split)
  if not len(pairs):
    raise ValueError(f'{data_dir}: no {split} pair of 2 x {config.num_frames} '
                     'frames (config.num_frames)')
  return pairs


def method_model(config, variables, method: str):
  """(config, variables) that run `method` with the trained cascade."""
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; one of {METHODS}')
  if not config.model.use_creative_agent:
    raise ValueError('the checkpoint has no creative agent '
                     '(config.model.use_creative_agent is False)')
  if method == 'creative_agent':
    return config, variables
  config = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  config.model.use_creative_agent = False
  config.model.fixed_masking = method
  params = {name: tree for name, tree in variables['params'].items()
            if name != 'creative_agent'}
  return config, dict(variables, params=params)


def generate(variables, inputs, targets, *, config):
  """The model in evaluation mode on latents [B, T, D] as it sees them."""
  return train_step.build_model(config).apply(variables, inputs, targets,
                                              train=False)


def padded_batches(num: int, batch_size: int):
  """Yields (indices, count) covering range(num) in order.

  Batches hold min(batch_size, num) indices: the last one repeats its final
  index to keep one shape (one compilation); only its first `count` rows are
  real.
  """
  batch_size = min(batch_size, num)
  for start in range(0, num, batch_size):
    stop = min(start + batch_size, num)
    padding = np.full(start + batch_size - stop, stop - 1)
    yield np.concatenate([np.arange(start, stop), padding]), stop - start


def _method_batch_metrics(variables, inputs, targets, *, config):
  out = generate(variables, inputs, targets, config=config)
  return batch_metrics(out.output, inputs, targets, out.input_mask,
                       out.target_mask)


def evaluate_methods(config, variables, pairs, batch_size: int):
  """{method: {metric: mean over the matched pairs}} for every method."""
  results = {}
  for method in METHODS:
    method_config, method_variables = method_model(config, variables, method)
    compute = jax.jit(functools.partial(_method_batch_metrics,
                                        config=method_config))
    per_pair = []
    for indices, count in padded_batches(len(pairs), batch_size):
      batch = pairs.read(indices, indices)
      metrics = compute(method_variables, batch['input'], batch['target'])
      per_pair.append({name: np.asarray(value)[:count]
                       for name, value in metrics.items()})
    results[method] = mean_over_pairs(per_pair)
  return results


def evaluate_checkpoint(workdir, out_dir, *, which='best', split='val',
                        batch_size=8, data_dir=None) -> dict:
  """Writes OUT_DIR/metrics.json, metrics.md, training_curves.png."""
  config, state, step = checkpoints.load_for_inference(workdir, which)
  pairs = split_pairs(config, data_dir or config.data_dir, split)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  results = evaluate_methods(config, variables, pairs, batch_size)
  latents.write_text_atomic(os.path.join(out_dir, 'metrics.json'),
                            json.dumps(results, indent=2) + '\n')
  latents.write_text_atomic(
      os.path.join(out_dir, 'metrics.md'),
      f'Checkpoint step {step}, {len(pairs)} {split} pairs of '
      f'{config.num_frames} frames.\n\n' + markdown_table(results))
  metrics_path = os.path.join(workdir, run_log.METRICS_FILE)
  if os.path.exists(metrics_path):
    from jingle_jax import plots  # pylint: disable=g-import-not-at-top
    plots.save_png(plots.training_curves_figure(
        run_log.read_records(metrics_path)),
                   os.path.join(out_dir, 'training_curves.png'))
  return results


def define_flags():
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'Training workdir (has config.json).')
  flags.DEFINE_string('checkpoint', 'best', 'best, latest or a step number.')
  flags.DEFINE_string('split', 'val', 'Dataset split whose pairs are used.')
  flags.DEFINE_integer('batch-size', 8, 'Pairs per model call.',
                       lower_bound=1)
  flags.DEFINE_string('data-dir', None,
                      'Latent dataset; default: config.data_dir of the run.')
  flags.DEFINE_string('out-dir', None, 'Where the results are written.')


def main(argv):
  checkpoints.quiet_orbax()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  try:
    results = evaluate_checkpoint(
        f.workdir, f['out-dir'].value,
        which=parse_checkpoint(f.checkpoint), split=f.split,
        batch_size=f['batch-size'].value, data_dir=f['data-dir'].value)
  except (ValueError, checkpoints.CheckpointError) as e:
    sys.exit(f'jingle_jax.evaluate: error: {e}')
  print(markdown_table(results), end='')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['workdir', 'out-dir'])
  app.run(main)
