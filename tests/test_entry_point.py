"""run_tpu_or_gpu.sh: its usage names every verb, and only that."""

import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'run_tpu_or_gpu.sh')


def verbs_handled():
  """The verbs of the script's case statement."""
  text = open(SCRIPT, encoding='utf-8').read()
  start = text.index('case $verb in')
  cases = text[start:text.index('esac', start)]
  return re.findall(r'^  ([a-z-]+)\)', cases, re.M)


def test_usage_lists_every_verb_and_nothing_else():
  result = subprocess.run(['bash', SCRIPT], capture_output=True, text=True)
  assert result.returncode == 2
  lines = result.stdout.splitlines()
  assert lines[0].startswith('The one entry point of Jingle-JAX')
  listed = [line.split()[0] for line in lines[1:] if line.strip()]
  assert listed == verbs_handled()
  assert {'evaluate', 'bench', 'tensorboard', 'convert'} <= set(listed)
  assert 'set -' not in result.stdout and '#' not in result.stdout


def test_every_readme_command_has_a_verb():
  """The README runs its commands through verbs the script has; a module
  it runs directly (python -m X) has a verb too."""
  readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
  script = open(SCRIPT, encoding='utf-8').read()
  used = set(re.findall(r'run_tpu_or_gpu\.sh ([a-z-]+)', readme))
  assert {'evaluate', 'bench', 'convert', 'tensorboard'} <= used
  assert used <= set(verbs_handled())
  for module in re.findall(r'-m ((?:jingle_jax|precompute)\.\w+)', readme):
    assert f'-m {module} ' in script, module
