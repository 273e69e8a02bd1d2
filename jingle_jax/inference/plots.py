"""Pictures: a pair's masks and envelopes, and the training curves.

Figures are drawn on matplotlib's Agg canvas without pyplot, so nothing
depends on a display or on pyplot's global figure list. Import this module
only where pictures are drawn.
"""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from jingle_jax.core import files
from jingle_jax.data import latents
from jingle_jax.inference import metrics

DPI = 100
MASK_FIGSIZE = (10.0, 8.0)  # inches: 1000 x 800 pixels at DPI
CURVES_FIGSIZE = (10.0, 12.0)

# Panels of the training curves: (title, metric names drawn in it, y scale).
# The adversarial terms and the gradient norm show a GAN that runs away.
CURVE_PANELS = (
    ('loss', ('loss',), 'linear'),
    ('complementarity', ('complementarity',), 'linear'),
    ('mask means', ('input_mask_mean', 'target_mask_mean'), 'linear'),
    ('adversarial terms', ('g_adv', 'd_loss'), 'linear'),
    ('gradient norm (before clipping, log scale)', ('grad_norm',), 'log'),
)


def mask_figure(inputs, targets, output, input_mask, target_mask,
                title='') -> Figure:
  """Input mask, target mask and overlap above the three envelopes.

  Every argument is one pair's [T, D] array (latents in the model's space).
  The masks are channel x time images on a shared 0..1 colour scale.
  """
  input_mask, target_mask = np.asarray(input_mask), np.asarray(target_mask)
  frames, channels = input_mask.shape
  seconds = frames / latents.FRAME_RATE
  figure = Figure(figsize=MASK_FIGSIZE, dpi=DPI, layout='constrained')
  axes = figure.subplots(4, 1, sharex=True, height_ratios=(1, 1, 1, 1.3))
  images = (('input mask', input_mask), ('target mask', target_mask),
            ('overlap: input mask x target mask', input_mask * target_mask))
  for ax, (name, mask) in zip(axes, images):
    image = ax.imshow(mask.T, origin='lower', aspect='auto', vmin=0.0,
                      vmax=1.0, cmap='magma', interpolation='nearest',
                      extent=(0.0, seconds, 0.0, channels))
    ax.set_title(name, loc='left', fontsize='medium')
    ax.set_ylabel('channel')
  figure.colorbar(image, ax=axes[:3], label='mask value', shrink=0.9)
  time = (np.arange(frames) + 0.5) / latents.FRAME_RATE
  envelopes = axes[3]
  for name, clip in (('input', inputs), ('target', targets),
                     ('output', output)):
    envelopes.plot(time, np.asarray(metrics.envelope(clip)), label=name,
                   linewidth=1.0)
  envelopes.set_title('smoothed RMS envelopes', loc='left', fontsize='medium')
  envelopes.set_xlabel('time (s)')
  envelopes.set_ylabel('RMS')
  envelopes.legend(loc='upper right', ncols=3, fontsize='small')
  if title:
    figure.suptitle(title)
  return figure


def training_curves_figure(records) -> Figure:
  """CURVE_PANELS' metrics against the step, per split.

  records: the {step, split, metric: value} dicts of metrics.jsonl
  (run_log.RunLog); a value logged as null (not finite) leaves a gap.
  """
  figure = Figure(figsize=CURVES_FIGSIZE, dpi=DPI, layout='constrained')
  axes = figure.subplots(len(CURVE_PANELS), 1, sharex=True)
  splits = sorted({r['split'] for r in records})
  for ax, (title, names, scale) in zip(axes, CURVE_PANELS):
    for split in splits:
      for name in names:
        points = [(r['step'], r[name]) for r in records
                  if r['split'] == split and name in r]
        if not points:
          continue
        steps, values = zip(*points)
        values = [np.nan if v is None else v for v in values]
        ax.plot(steps, values, label=f'{split} {name}', linewidth=1.0,
                marker='o' if len(points) < 20 else None, markersize=3)
    ax.set_title(title, loc='left', fontsize='medium')
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.set_yscale(scale)
      ax.legend(fontsize='small')
  axes[-1].set_xlabel('step')
  return figure


def figure_array(figure) -> np.ndarray:
  """The rendered figure as uint8 [H, W, 3] (e.g. for TensorBoard)."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  return np.array(canvas.buffer_rgba())[..., :3]


def mask_figure_array(inputs, targets, output, input_mask, target_mask,
                      title='') -> np.ndarray:
  """mask_figure rendered as uint8 [800, 1000, 3], for TensorBoard."""
  return figure_array(mask_figure(inputs, targets, output, input_mask,
                                  target_mask, title))


def save_png(figure, path) -> None:
  """Writes the figure as PNG at its own size (figsize x DPI), atomically."""
  with files.atomic_write(path) as f:
    FigureCanvasAgg(figure).print_png(f)
