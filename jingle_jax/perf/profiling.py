"""What a step spends on: the device ops of a jax.profiler trace, by time,
and the kernels of a compiled step."""

import collections
import glob
import gzip
import json
import os
import re


def _device_ops(path):
  """(ops, names of the processes they ran on) of one perfetto trace: the
  GPU's or TPU's, or the host's when there is no accelerator."""
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  processes = {event['pid']: event.get('args', {}).get('name', '')
               for event in events if event.get('ph') == 'M' and
               event.get('name') == 'process_name'}
  devices = {pid for pid, name in processes.items()
             if 'GPU' in name or 'TPU' in name} or set(processes)
  ops = [event for event in events
         if event.get('ph') == 'X' and event.get('pid') in devices]
  return ops, sorted(processes[pid] for pid in devices)


def top_ops(trace_dir: str, steps: int, count: int = 40) -> str:
  """A table of the `count` costliest ops per step of the trace(s) under
  trace_dir (written by jax.profiler.trace with create_perfetto_trace)."""
  paths = glob.glob(os.path.join(trace_dir, '**', '*.json.gz'),
                    recursive=True)
  if not paths:
    return f'no perfetto trace under {trace_dir}\n'
  ops, devices = max((_device_ops(path) for path in paths),
                     key=lambda found: len(found[0]))
  time_by_name, calls = collections.Counter(), collections.Counter()
  for op in ops:
    time_by_name[op['name']] += op.get('dur', 0)
    calls[op['name']] += 1
  total = sum(time_by_name.values())
  lines = [f'{", ".join(devices)}: {len(ops) / steps:.0f} ops and '
           f'{total / 1e3 / steps:.2f} ms of op time per step '
           f'({steps} steps)',
           '   ms/step  share  calls/step  op']
  for name, micros in time_by_name.most_common(count):
    lines.append(f'{micros / 1e3 / steps:10.3f} {100 * micros / total:5.1f}% '
                 f'{calls[name] / steps:11.1f}  {name[:150]}')
  return '\n'.join(lines) + '\n'


def count_fusions(compiled) -> int:
  """Fused computations in a compiled program's HLO: on a GPU, each is a
  kernel of its own (the rest being library calls such as matmuls)."""
  return len(re.findall(r'^%?fused_computation', compiled.as_text(), re.M))


# Instructions outside fused computations that launch nothing on a GPU, and
# those whose computations the walk below counts instead.
_NO_KERNEL = frozenset((
    'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast',
    'after-all', 'partition-id', 'replica-id', 'opt-barrier', 'copy-done',
    'add-dependency', 'while', 'conditional', 'call'))


def gpu_kernels(hlo_text: str) -> dict:
  """The kernels of a GPU-compiled program's HLO text (each fusion, library
  call and copy outside fused computations), written and launched.

  {'kernels': in the computations the entry reaches, 'launches': in one
  run, a while loop's body counted its known trip count times and a
  conditional as its larger branch, 'by_op': launches by instruction,
  'loops': [(name, trips, launches per trip)]}. A loop without a known
  trip count counts once.
  """
  computations = {}
  for block in re.split(r'\n\n+', hlo_text):
    header = re.match(r'\s*(?:ENTRY )?%(\S+) ', block)
    if header:
      computations[header.group(1)] = [
          (_op(line), line) for line in block.strip().splitlines()[1:]]
  written, loops, launched = collections.Counter(), [], {}

  def launches(name) -> collections.Counter:
    """A computation's launches per run; its kernels, the first time."""
    if name not in launched:
      counts = collections.Counter()
      for op, line in computations[name]:
        if op == 'while':
          launches(_called('condition', line))  # written, not counted
          per_trip = launches(_called('body', line))
          trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
          trips = int(trips.group(1)) if trips else 1
          loops.append((_op_name(line), trips, sum(per_trip.values())))
          counts.update({k: trips * v for k, v in per_trip.items()})
        elif op == 'conditional':
          listed = re.search(r'branch_computations=\{([^}]*)\}', line)
          branches = re.findall(
              r'%([\w.\-]+)', listed.group(1) if listed else ' '.join(
                  re.findall(r'(?:true|false)_computation=%[\w.\-]+', line)))
          counts.update(max((launches(b) for b in branches),
                            key=lambda c: sum(c.values())))
        elif op == 'call':
          counts.update(launches(_called('to_apply', line)))
        elif op is not None and op not in _NO_KERNEL:
          counts[op] += 1
          written[op] += 1
      launched[name] = counts
    return launched[name]

  by_op = launches(re.search(r'^ENTRY %(\S+) ', hlo_text, re.M).group(1))
  return {'kernels': sum(written.values()), 'launches': sum(by_op.values()),
          'by_op': dict(by_op.most_common()), 'loops': loops}


def _op(line: str):
  """An instruction's opcode: the first word after '=' that opens its
  operands (shapes, tuples of them included, never do)."""
  _, equals, rest = line.partition(' = ')
  found = equals and re.search(r'(?<![\w.%\-])([a-z][\w\-]*)\(', rest)
  return found.group(1) if found else None


def _called(attribute: str, line: str) -> str:
  return re.search(attribute + r'=%([\w.\-]+)', line).group(1)


def _op_name(line: str) -> str:
  found = re.search(r'op_name="([^"]*)"', line)
  return found.group(1) if found else ''
