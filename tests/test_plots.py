"""The mask picture and the training curves, as PNG files and arrays."""

import os

import numpy as np
from PIL import Image

from jingle_jax.inference import plots
from jingle_jax.models import baselines

T, D = 300, 16
MASK_PIXELS = (int(plots.MASK_FIGSIZE[0] * plots.DPI),
               int(plots.MASK_FIGSIZE[1] * plots.DPI))  # (width, height)


def pair(input_mask):
  rng = np.random.default_rng(0)
  inputs, targets, output = rng.normal(size=(3, T, D)).astype(np.float32)
  return dict(inputs=inputs, targets=targets, output=output,
              input_mask=input_mask, target_mask=1.0 - input_mask)


def temporal_mask():
  return np.broadcast_to(baselines.temporal_profile(T)[:, None], (T, D))


def test_mask_picture_is_a_png_of_the_expected_size(tmp_path):
  path = tmp_path / 'masks.png'
  plots.save_png(plots.mask_figure(**pair(temporal_mask()), title='a + b'),
                 path)
  assert os.listdir(tmp_path) == ['masks.png']  # no temporary file left
  with Image.open(path) as image:
    assert image.format == 'PNG'
    assert image.size == MASK_PIXELS
  figure = plots.mask_figure(**pair(temporal_mask()))
  titles = [ax.get_title(loc='left') for ax in figure.axes[:4]]
  assert titles == ['input mask', 'target mask',
                    'overlap: input mask x target mask',
                    'smoothed RMS envelopes']
  envelopes = figure.axes[3]
  assert [line.get_label() for line in envelopes.lines] == [
      'input', 'target', 'output']
  assert envelopes.get_xlim()[1] >= T / 75  # time axis in seconds


def test_mask_figure_array_shows_the_masks():
  temporal = plots.mask_figure_array(**pair(temporal_mask()))
  assert temporal.dtype == np.uint8
  assert temporal.shape == (MASK_PIXELS[1], MASK_PIXELS[0], 3)
  flipped = plots.mask_figure_array(**pair(1.0 - temporal_mask()))
  assert np.any(temporal != flipped)
  # Rows of the input-mask image differ; the envelope panel does not.
  rows_differ = np.any(temporal != flipped, axis=(1, 2))
  assert rows_differ[:MASK_PIXELS[1] // 4].any()
  assert not rows_differ[-MASK_PIXELS[1] // 5:].any()


def test_training_curves_draw_each_split(tmp_path):
  records = []
  for step in range(10, 110, 10):
    records.append({'step': step, 'split': 'train', 'loss': 1.0 / step,
                    'complementarity': 0.75 + step / 1000,
                    'input_mask_mean': 0.5, 'target_mask_mean': 0.49,
                    'g_adv': 0.7, 'd_loss': 1.4, 'grad_norm': step / 10})
    if step % 50 == 0:
      records.append({'step': step, 'split': 'val', 'loss': None,
                      'complementarity': 0.8, 'input_mask_mean': 0.5,
                      'target_mask_mean': 0.5})
  figure = plots.training_curves_figure(records)
  labels = [[line.get_label() for line in ax.lines] for ax in figure.axes]
  assert labels == [
      ['train loss', 'val loss'],
      ['train complementarity', 'val complementarity'],
      ['train input_mask_mean', 'train target_mask_mean',
       'val input_mask_mean', 'val target_mask_mean'],
      ['train g_adv', 'train d_loss'],
      ['train grad_norm']]
  assert figure.axes[4].get_yscale() == 'log'
  np.testing.assert_array_equal(figure.axes[0].lines[0].get_xdata(),
                                range(10, 110, 10))
  path = tmp_path / 'curves.png'
  plots.save_png(figure, path)
  with Image.open(path) as image:
    assert image.size == (int(plots.CURVES_FIGSIZE[0] * plots.DPI),
                          int(plots.CURVES_FIGSIZE[1] * plots.DPI))
