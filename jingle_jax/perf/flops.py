"""The FLOPs a traced program asks for, counted from its jaxpr.

The bench's analytic count of a step (and its MFU): matrix products
(dot_general) and convolutions at 2 FLOPs per multiply-add, and the fused
attention kernels at their own count (the cost estimate of each
pallas_call). Scan bodies count once per iteration, and what remat
recomputes counts where the backward pass recomputes it. A kernel whose
outputs go unused (a remat policy kept them, so XLA drops the call) does
not count. Elementwise work, reductions and FFTs are left out; XLA's cost
analysis counts those, but a loop body only once and a kernel not at all.
"""

import math

from jax.extend import core as jax_core


def _dot_general(equation) -> int:
  lhs = equation.invars[0].aval
  (contracting, _), _ = equation.params['dimension_numbers']
  out = equation.outvars[0].aval
  return 2 * math.prod(out.shape) * math.prod(lhs.shape[d]
                                              for d in contracting)


def _conv(equation) -> int:
  """2 x outputs x (kernel size / output features), whatever the layout.

  An input dilated by n (a strided convolution's input gradient) has n - 1
  zeros between its values, which take no multiplication.
  """
  params = equation.params
  rhs = equation.invars[1].aval
  out = equation.outvars[0].aval
  taps = math.prod(rhs.shape) // rhs.shape[params['dimension_numbers']
                                           .rhs_spec[0]]
  return 2 * math.prod(out.shape) * taps // math.prod(params['lhs_dilation'])


def _shards(params) -> int:
  """How many shards a shard_map's body runs on (the name of its manual
  axes' parameter differs between jax releases)."""
  axes = next(params[key] for key in ('manual_axes', 'newly_manual_axes',
                                      'axis_names') if key in params)
  return math.prod(params['mesh'].shape[axis] for axis in axes)


def _subjaxprs(equation):
  for param in equation.params.values():
    for value in param if isinstance(param, (list, tuple)) else [param]:
      value = getattr(value, 'jaxpr', value)
      if isinstance(value, jax_core.Jaxpr):
        yield value


def _used_later(jaxpr):
  """The variables some equation or the jaxpr's outputs use."""
  used = {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
  for equation in jaxpr.eqns:
    used.update(v for v in equation.invars if isinstance(v, jax_core.Var))
  return used


def count(jaxpr) -> int:
  """FLOPs of a jaxpr (or closed jaxpr), as the module docstring says."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  used = _used_later(jaxpr)
  total = 0
  for equation in jaxpr.eqns:
    name = equation.primitive.name
    if name == 'dot_general':
      total += _dot_general(equation)
    elif name == 'conv_general_dilated':
      total += _conv(equation)
    elif name == 'pallas_call':
      estimate = equation.params.get('cost_estimate')
      if estimate is not None and any(v in used for v in equation.outvars):
        total += estimate.flops
    elif name == 'cond':  # the costlier branch
      total += max(count(branch) for branch in equation.params['branches'])
    elif name == 'shard_map':  # the body runs on every shard
      total += _shards(equation.params) * count(equation.params['jaxpr'])
    else:
      repeats = equation.params['length'] if name == 'scan' else 1
      total += repeats * sum(count(sub) for sub in _subjaxprs(equation))
  return total

