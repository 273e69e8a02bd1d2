"""jax.jit with XLA options for the model's programs: the train and
evaluation steps, the state's initialisation, inference and the bench's
inputs to them.

On a CPU, XLA's loop emitters compile a kernel faster than its MLIR fusion
emitters, and LLVM's level 1 faster than its default 2. Runs of the model
there (the tests, the demo) are bound by compiling: the seed step compiles
in 7.0-7.2 s instead of 8.9-9.0 s, and a step of the small models takes
3-15% longer (docs/BENCHMARKS.md, "the CPU's kernel emitters"). EnCodec's
encoder and decoder, which run long on few kernels, keep XLA's defaults,
as other backends do.
"""

import functools

import jax

CPU_OPTIONS = {'xla_cpu_use_fusion_emitters': False,
               'xla_backend_optimization_level': 1}


@functools.cache
def options(platform: str) -> dict:
  """The compiler options for programs on `platform`: CPU_OPTIONS on a CPU
  whose XLA knows them, else none."""
  if platform != 'cpu':
    return {}
  try:
    jax.jit(lambda x: x, compiler_options=CPU_OPTIONS).lower(0).compile()
  except jax.errors.JaxRuntimeError:  # an XLA without the option.
    return {}
  return CPU_OPTIONS


def jit(fun, **kwargs):
  """jax.jit(fun, **kwargs), compiled with options() of the default
  backend."""
  return jax.jit(fun, compiler_options=options(jax.default_backend()),
                 **kwargs)
