"""Listening pages: one HTML file that links the audio and pictures beside
it, so that its folder can be copied anywhere and opened offline (no
scripts, styles or fonts from elsewhere).

evaluate writes one for a checkpoint (report.html), jingle_jax.arrange one
for an arrangement (OUT.html).
"""

import html
import os
import urllib.parse

import numpy as np

from jingle_jax.core import files
from jingle_jax.data import latents
from jingle_jax.inference import wav_files

_STYLE = '''
body { font-family: sans-serif; margin: 2em auto; max-width: 70em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fff3cd; border: 1px solid #e0b000;
           padding: 0.6em 1em; }
.players { display: flex; flex-wrap: wrap; gap: 0.5em 1.5em; }
.players figure { margin: 0; } figcaption { font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; }
'''


def escape(text) -> str:
  return html.escape(str(text))


def link(path: str) -> str:
  """A relative path as an attribute value."""
  return escape(urllib.parse.quote(path))


def facts(rows) -> str:
  """A two-column table of (label, value) rows; values are text."""
  cells = ''.join(f'<tr><th>{escape(label)}</th><td>{escape(value)}</td>'
                  '</tr>' for label, value in rows)
  return f'<table>{cells}</table>'


def table(headings, rows, numeric_from: int = 1) -> str:
  """A table of text cells; columns from `numeric_from` on align right."""
  head = ''.join(f'<th>{escape(h)}</th>' for h in headings)
  body = ''.join(
      '<tr>' + ''.join(
          f'<td class="number">{escape(cell)}</td>' if i >= numeric_from
          else f'<td>{escape(cell)}</td>' for i, cell in enumerate(row)) +
      '</tr>' for row in rows)
  return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def players(clips) -> str:
  """Audio players of (caption, relative path) clips."""
  figures = ''.join(
      f'<figure><figcaption>{escape(caption)}</figcaption><audio controls '
      f'preload="none" src="{link(path)}"></audio></figure>'
      for caption, path in clips)
  return f'<div class="players">{figures}</div>'


def picture(path: str, description: str) -> str:
  return f'<img src="{link(path)}" alt="{escape(description)}">'


def paragraph(text: str, css_class: str = '') -> str:
  attribute = f' class="{css_class}"' if css_class else ''
  return f'<p{attribute}>{escape(text)}</p>'


def encodec_weights_note(identity: str) -> str:
  """The EnCodec weights' identity, with a warning when they are random."""
  if identity.startswith(latents.RANDOM_WEIGHTS):
    return paragraph(
        f'These latents and this audio come from random EnCodec weights '
        f'({identity}), not the pretrained model: the decoded audio is '
        'noise-like, not music.', 'warning')
  return paragraph(f'EnCodec weights: {identity}.')


def write_audio(path, samples) -> None:
  """24 kHz mono audio as 16-bit WAV (half the size of float; what a
  listening page needs), clipped to full scale."""
  wav_files.write_wav(path, np.clip(samples, -1.0, 1.0), subtype='PCM_16')


def write_page(path, title: str, sections) -> None:
  """Writes the page atomically; sections are (heading or None, HTML)."""
  body = ''.join((f'<h2>{escape(heading)}</h2>' if heading else '') + content
                 for heading, content in sections)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files.write_text(
      path, '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
      f'<title>{escape(title)}</title><style>{_STYLE}</style></head><body>'
      f'<h1>{escape(title)}</h1>{body}</body></html>\n')
