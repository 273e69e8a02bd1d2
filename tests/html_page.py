"""A listening page read back: what it links, its tables and its text."""

import html.parser
import os
import urllib.parse

import numpy as np
from PIL import Image
import soundfile


class Page(html.parser.HTMLParser):
  """links: [(tag, path)] of audio and img sources; tables: [[[cell]]];
  text: the visible text; external: any reference to another site."""

  def __init__(self, path):
    super().__init__()
    self.links, self.tables, self.text, self.external = [], [], [], []
    self._cell = None
    with open(path, encoding='utf-8') as f:
      self.feed(f.read())
    self.directory = os.path.dirname(path)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    for name in ('src', 'href'):
      value = attrs.get(name)
      if value is None:
        continue
      if '//' in value or value.startswith(('http:', 'https:', 'data:')):
        self.external.append(value)
      elif tag in ('audio', 'img'):
        self.links.append((tag, urllib.parse.unquote(value)))
    if tag in ('script', 'link'):
      self.external.append(tag)
    if tag == 'table':
      self.tables.append([])
    elif tag == 'tr':
      self.tables[-1].append([])
    elif tag in ('td', 'th'):
      self._cell = ''

  def handle_endtag(self, tag):
    if tag in ('td', 'th'):
      self.tables[-1][-1].append(self._cell)
      self._cell = None

  def handle_data(self, data):
    self.text.append(data)
    if self._cell is not None:
      self._cell += data

  def check_links(self, frames):
    """Every linked file exists: PNG pictures, and 24 kHz audio of
    `frames` EnCodec frames. Returns {path: audio or image size}."""
    found = {}
    for tag, path in self.links:
      full = os.path.join(self.directory, path)
      assert os.path.isfile(full), path
      if tag == 'audio':
        audio, rate = soundfile.read(full)
        assert rate == 24_000 and audio.shape == (frames * 320,), path
        assert np.all(np.isfinite(audio)), path
        found[path] = audio
      else:
        with Image.open(full) as image:
          assert image.format == 'PNG', path
          found[path] = image.size
    return found
