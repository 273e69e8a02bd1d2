"""The trained creative agent against the fixed masking baselines.

  python -m jingle_jax.evaluate --workdir W [--checkpoint best|latest|STEP] \
      [--split val] [--batch-size 8] [--report-pairs 4] --out-dir O

One row per method on every matched pair of the split: `creative_agent`,
`none` (nothing masked) and the five baselines of DESIGN.md 4.6. Writes
O/metrics.json (method -> metric -> value), O/metrics.md (the same as a
Markdown table), O/training_curves.png from W/metrics.jsonl, and
O/report.html: the run, the table, the curves and, for the first
--report-pairs pairs, their input, target and every method's output as
audio (the dataset's JAX decoder; O/pairs/pair_NNN/METHOD.wav) beside the
agent's masks picture. Copy O anywhere and open report.html offline.

How the methods are run and measured: DESIGN.md 6.1.
"""

import dataclasses
import functools
import json
import os

from absl import flags
import jax
import numpy as np

from jingle_jax import cli
from jingle_jax.core import files
from jingle_jax.core import xla_options
from jingle_jax.data import input_pipeline
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import metrics
from jingle_jax.inference import report
from jingle_jax.inference import samples
from jingle_jax.inference import trained_model
from jingle_jax.training import run_dir
from jingle_jax.training import run_log

METHODS = trained_model.MASKINGS
REPORT_FILE = 'report.html'
# The report's players of a pair: (caption, clip: 'input', 'target' or the
# output of a method).
PLAYERS = (('input', 'input'), ('target', 'target'),
           ('output: creative agent', 'creative_agent'),
           ('output: no masking', 'none'),
           *((f'output: {method} baseline', method) for method in METHODS
             if method not in ('creative_agent', 'none')))

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


def table_rows(results: dict[str, dict[str, float]]) -> list[list[str]]:
  """[method, formatted COLUMNS...] per method, in the dict's order."""
  return [[method] + [fmt.format(values[name]) for name, _, fmt in COLUMNS]
          for method, values in results.items()]


def markdown_table(results: dict[str, dict[str, float]]) -> str:
  """One row per method (in the dict's order), COLUMNS as columns."""
  lines = ['| Method | ' + ' | '.join(h for _, h, _ in COLUMNS) + ' |',
           '|---|' + '---:|' * len(COLUMNS)]
  for method, *cells in table_rows(results):
    lines.append(f'| `{method}` | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def evaluate_methods(model: trained_model.TrainedModel, pairs, batch_size: int,
                     kept: int = 0):
  """({method: {metric: mean over the matched pairs}}, examples).

  examples: the first `kept` pairs' 'input' and 'target' and, per method,
  its {'output', 'input_mask', 'target_mask'}, each [kept, T, D].
  """
  every_pair = np.arange(len(pairs))
  batch = pairs.read(every_pair, every_pair)
  fault_error = functools.partial(pairs.fault_error, inputs=every_pair,
                                  targets=every_pair)
  pair_metrics = xla_options.jit(metrics.batch_metrics)
  results, examples = {}, {}
  for method in METHODS:
    run = model.with_masking(method).run(batch['input'], batch['target'],
                                         batch_size, fault_error)
    results[method] = metrics.mean_over_pairs(jax.tree.map(
        np.asarray, pair_metrics(run['output'], run['input'], run['target'],
                                 run['input_mask'], run['target_mask'])))
    examples.setdefault('input', run['input'][:kept])
    examples.setdefault('target', run['target'][:kept])
    examples[method] = {name: run[name][:kept] for name in
                        ('output', 'input_mask', 'target_mask')}
  return results, examples


def evaluate_checkpoint(workdir, out_dir, *, which='best', split='val',
                        batch_size=8, data_dir=None, report_pairs=4) -> dict:
  """Writes OUT_DIR/metrics.json, metrics.md, training_curves.png and
  report.html (with its pairs' audio and pictures)."""
  dataset = trained_model.run_dataset(workdir, data_dir)
  model = trained_model.TrainedModel.load(workdir, which, dataset=dataset)
  pairs = input_pipeline.dataset_pairs(
      model.config.data, model.config.num_frames, dataset, split)
  results, examples = evaluate_methods(model, pairs, batch_size,
                                       report_pairs)
  files.write_text(os.path.join(out_dir, 'metrics.json'),
                   json.dumps(results, indent=2) + '\n')
  summary = (f'Checkpoint step {model.step}, {len(pairs)} {split} pairs of '
             f'{model.config.num_frames} frames.')
  files.write_text(os.path.join(out_dir, 'metrics.md'),
                   f'{summary}\n\n' + markdown_table(results))
  metrics_path = os.path.join(workdir, run_dir.METRICS_FILE)
  curves = os.path.exists(metrics_path)
  if curves:
    # pylint: disable-next=g-import-not-at-top
    from jingle_jax.inference import plots
    plots.save_png(plots.training_curves_figure(
        run_log.read_records(metrics_path)),
                   os.path.join(out_dir, 'training_curves.png'))
  write_report(out_dir, workdir, model, dataset, pairs, split, results,
               examples, curves)
  return results


def loss_facts(loss) -> str:
  """The loss terms a report names: each weight that is not 0, and each
  switch that is on."""
  return ', '.join(name if value is True else f'{name} {value:g}'
                   for name, value in dataclasses.asdict(loss).items()
                   if value)


def optimiser_facts(optim) -> str:
  """The optimisers' settings a report names (DESIGN.md 5, 4.4a)."""
  schedule = optim.lr_schedule
  if schedule != 'constant':
    schedule += (f' (warm-up {optim.warmup_steps} updates, to '
                 f'{optim.final_lr_fraction:g} of the peak)')
  return (f'AdamW lr {optim.learning_rate:g}, discriminator lr '
          f'{optim.disc_learning_rate:g}, {schedule} rates, weights '
          + (f'averaged (EMA {optim.ema_decay:g})' if optim.ema_decay
             else 'as trained (no average)'))


def write_report(out_dir, workdir, model, dataset, pairs, split, results,
                 examples, curves: bool) -> None:
  """OUT_DIR/report.html, and the audio and pictures of its pairs."""
  config = model.config
  model_config = config.model
  seconds = config.num_frames / latents.FRAME_RATE
  sections = [
      (None, report.encodec_weights_note(
          dataset.manifest.encodec_weights)),
      ('The run', report.facts([
          ('workdir', os.path.abspath(workdir)),
          ('checkpoint', f'step {model.step} ({model.updates} updates)'),
          ('dataset', os.path.dirname(os.path.abspath(
              dataset.manifest_path))),
          ('pairs', f'{len(pairs)} {split} pairs of {config.num_frames} '
                    f'frames ({seconds:g} s)'),
          ('model', f'{model_config.num_stages} stages x '
                    f'{model_config.num_layers} layers, '
                    f'{model_config.num_heads} heads, creative agent '
                    f'{"on" if model_config.use_creative_agent else "off"}'),
          ('latents', 'normalised' if config.data.normalise_latents else 'raw'),
          ('loss weights', loss_facts(config.loss)),
          ('optimisers', optimiser_facts(config.optim)),
          ('EnCodec weights', f'{dataset.manifest.encodec_weights} '
                              f'({dataset.manifest.encoder} encoder)')])),
      ('Every method on every pair', report.table(
          ['Method'] + [heading for _, heading, _ in COLUMNS],
          table_rows(results))),
  ]
  if curves:
    sections.append(('Training', report.picture('training_curves.png',
                                                'training curves')))
  sections.append(('Listen', _listening_section(out_dir, model, dataset,
                                                pairs, examples)))
  report.write_page(os.path.join(out_dir, REPORT_FILE),
                    f'Jingle-JAX evaluation: checkpoint {model.step}',
                    sections)


def _listening_section(out_dir, model, dataset, pairs, examples) -> str:
  """The players and masks picture of each kept pair (its files written)."""
  try:
    decoder = encodec_decoding.read(dataset)
    note = ''
  except encodec_decoding.DecoderError as e:
    decoder = None
    note = report.paragraph(f'No audio: {e}', 'warning')
  clips, parts = {}, [note]
  agent = examples['creative_agent']
  for i in range(len(examples['input'])):
    folder = f'pairs/pair_{i:03d}'
    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    window = samples.window_record(pairs, i, 0)
    title = (f'{window["song"]} from frame {window["first_frame"]} '
             f'(input), then the next {pairs.window} frames (target)')
    samples.save_mask_picture(
        {'input': examples['input'][i], 'target': examples['target'][i],
         **{name: values[i] for name, values in agent.items()}},
        os.path.join(out_dir, folder, 'masks.png'), title)
    parts.append(f'<h3>{report.escape(title)}</h3>')
    if decoder is not None:
      for _, name in PLAYERS:
        latent = (examples[name][i] if name in ('input', 'target')
                  else examples[name]['output'][i])
        clips[f'{folder}/{name}.wav'] = np.asarray(
            model.space.denormalise(latent))
      parts.append(report.players([(caption, f'{folder}/{name}.wav')
                                   for caption, name in PLAYERS]))
    parts.append(report.picture(f'{folder}/masks.png',
                                'masks of the creative agent'))
  if clips:
    audio = encodec_decoding.decode_clips(decoder, list(clips.values()))
    for path, waveform in zip(clips, audio):
      report.write_audio(os.path.join(out_dir, path), waveform)
  return ''.join(parts)


def define_flags():
  """The command line (defined only when run as a program)."""
  cli.define_checkpoint_flags()
  cli.define_pair_flags()
  flags.DEFINE_integer('report-pairs', 4, 'Pairs of the split heard and '
                       'shown in report.html.', lower_bound=0)
  flags.DEFINE_string('out-dir', None, 'Where the results are written.')


def run(flag_values) -> None:
  results = evaluate_checkpoint(
      flag_values.workdir, flag_values['out-dir'].value,
      which=cli.checkpoint_choice(flag_values.checkpoint),
      split=flag_values.split, batch_size=flag_values['batch-size'].value,
      data_dir=flag_values['data-dir'].value,
      report_pairs=flag_values['report-pairs'].value)
  print(markdown_table(results), end='')
  print(os.path.join(flag_values['out-dir'].value, REPORT_FILE))


if __name__ == '__main__':
  cli.run('jingle_jax.evaluate', run, define_flags,
          required=['workdir', 'out-dir'])
