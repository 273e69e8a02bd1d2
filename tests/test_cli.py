"""What the commands share: the environment set at their entry."""

import os
import subprocess
import sys

# Prints 'start' each time it runs, then the wait policy torch was loaded
# with, as the commands that run torch begin.
ENTRY = """
import os, torch
from jingle_jax import cli
print('start', flush=True)
cli.set_torch_environment()
print(os.environ['OMP_WAIT_POLICY'])
"""


def test_a_torch_command_started_without_its_environment_starts_again():
  env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
  result = subprocess.run([sys.executable, '-c', ENTRY], env=env,
                          capture_output=True, text=True, timeout=300,
                          check=True)
  # torch read OpenMP's settings before they were set: a second start.
  assert result.stdout.split() == ['start', 'start', 'PASSIVE']
  given = subprocess.run([sys.executable, '-c', ENTRY],
                         env=dict(env, OMP_WAIT_POLICY='ACTIVE'),
                         capture_output=True, text=True, timeout=300,
                         check=True)
  assert given.stdout.split() == ['start', 'ACTIVE']  # the user's choice
