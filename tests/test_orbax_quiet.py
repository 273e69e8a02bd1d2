"""Orbax's chatter is kept out of the commands' output, and only it."""

import logging
import sys

import pytest

from jingle_jax.core import orbax_quiet


def record(path, level, name='absl', message='saved'):
  return logging.LogRecord(name, level, path, 1, message, None, None)


def test_orbax_records_below_error_are_dropped_and_nothing_else():
  orbax = '/site-packages/orbax/checkpoint/checkpoint_manager.py'
  assert not orbax_quiet.keeps(record(orbax, logging.INFO))
  assert not orbax_quiet.keeps(record(orbax, logging.WARNING))
  assert orbax_quiet.keeps(record(orbax, logging.ERROR))
  assert orbax_quiet.keeps(record('/repo/jingle_jax/train.py', logging.INFO))
  abandoned = 'Task exception was never retrieved'
  assert not orbax_quiet.keeps(record('/asyncio/base_events.py',
                                      logging.ERROR, 'asyncio', abandoned))
  assert orbax_quiet.keeps(record('/asyncio/base_events.py', logging.ERROR,
                                  'asyncio', 'Unclosed event loop'))


def test_what_a_failed_restore_prints_is_held_back(capsys):
  with pytest.raises(ValueError, match='unreadable'):
    with orbax_quiet.failed_reads_held():
      print('a page of TensorStore errors', file=sys.stderr)
      raise ValueError('unreadable')
  assert capsys.readouterr().err == ''
  with orbax_quiet.failed_reads_held():
    print('a warning of a restore that worked', file=sys.stderr)
  assert capsys.readouterr().err == 'a warning of a restore that worked\n'
