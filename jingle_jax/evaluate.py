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

All metrics (jingle_jax.metrics) are computed in the model's space, where
the training loss lives: raw latents under the seed recipe, normalised with
the dataset's per-channel mean and std with config.normalise_latents.
`rms_error_input` is the training loss's `recon_input` term, per pair.
Metrics are per pair, then averaged over pairs (`rhythm_preserved` is thus a
share).
"""

import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from jingle_jax import checkpoints
from jingle_jax import cli
from jingle_jax import files
from jingle_jax import inference
from jingle_jax import input_pipeline
from jingle_jax import metrics
from jingle_jax import run_log

METHODS = inference.MASKINGS

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


def markdown_table(results: dict[str, dict[str, float]]) -> str:
  """One row per method (in the dict's order), COLUMNS as columns."""
  lines = ['| Method | ' + ' | '.join(h for _, h, _ in COLUMNS) + ' |',
           '|---|' + '---:|' * len(COLUMNS)]
  for method, values in results.items():
    cells = [fmt.format(values[name]) for name, _, fmt in COLUMNS]
    lines.append(f'| `{method}` | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def evaluate_methods(model: inference.TrainedModel, pairs, batch_size: int):
  """{method: {metric: mean over the matched pairs}} for every method."""
  batch = pairs.read(np.arange(len(pairs)), np.arange(len(pairs)))
  inputs, targets = batch['input'], batch['target']
  pair_metrics = jax.jit(metrics.batch_metrics)
  results = {}
  for method in METHODS:
    output, input_mask, target_mask = model.with_masking(method).run(
        inputs, targets, batch_size)
    results[method] = metrics.mean_over_pairs(jax.tree.map(
        np.asarray, pair_metrics(output, inputs, targets, input_mask,
                                 target_mask)))
  return results


def evaluate_checkpoint(workdir, out_dir, *, which='best', split='val',
                        batch_size=8, data_dir=None) -> dict:
  """Writes OUT_DIR/metrics.json, metrics.md, training_curves.png."""
  dataset = inference.run_dataset(workdir, data_dir)
  model = inference.TrainedModel.load(workdir, which, dataset=dataset)
  pairs = input_pipeline.dataset_pairs(model.config, dataset, split)
  results = evaluate_methods(model, pairs, batch_size)
  files.write_text(os.path.join(out_dir, 'metrics.json'),
                   json.dumps(results, indent=2) + '\n')
  files.write_text(
      os.path.join(out_dir, 'metrics.md'),
      f'Checkpoint step {model.step}, {len(pairs)} {split} pairs of '
      f'{model.config.num_frames} frames.\n\n' + markdown_table(results))
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


def run(f) -> None:
  results = evaluate_checkpoint(
      f.workdir, f['out-dir'].value,
      which=checkpoints.parse_which(f.checkpoint), split=f.split,
      batch_size=f['batch-size'].value, data_dir=f['data-dir'].value)
  print(markdown_table(results), end='')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['workdir', 'out-dir'])
  app.run(cli.main_for('jingle_jax.evaluate', run))
