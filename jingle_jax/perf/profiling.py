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
