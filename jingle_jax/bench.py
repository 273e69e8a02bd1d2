"""Throughput of the compiled train step on random latents, as one JSON line.

  python -m jingle_jax.bench --config configs/creative.py \
      [--preset cpu-small|cpu-seed|seed] [--params-only] [--steps N] \
      [--notarget-audio] [--profile DIR]

The step is data-parallel over all local devices (state replicated, batch
split), with per_device_batch_size pairs per device. When config.loss weights
audio-domain terms, the EnCodec decoder in the step has random weights of
the same shapes (speed does not depend on them), and the batch holds the
target clips' waveforms, as from a dataset precomputed with --keep-audio
(--notarget-audio: the targets are decoded instead).
"""

import contextlib
import dataclasses
import functools
import json
import os
import statistics
import time

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from jingle_jax import cli
from jingle_jax.config import run_config
from jingle_jax.core import compile_cache
from jingle_jax.core import files
from jingle_jax.core import parallel
from jingle_jax.core import xla_options
from jingle_jax.data import latent_space
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.models import encodec_decoder
from jingle_jax.perf import flops
from jingle_jax.perf import profiling
from jingle_jax.training import audio_losses
from jingle_jax.training import train_step

@dataclasses.dataclass(frozen=True)
class Preset:
  """The shapes a benchmark runs at."""
  num_stages: int
  num_layers: int
  num_frames: int
  per_device_batch_size: int
  remat: str

  @classmethod
  def of(cls, config: run_config.Config) -> 'Preset':
    return cls(config.model.num_stages, config.model.num_layers,
               config.num_frames, config.per_device_batch_size,
               config.model.remat)

  def apply(self, config, given=()) -> None:
    """Sets an ml_collections config's fields to the preset's, but for
    those `given` as --config.FIELD flags; the creative agent on."""
    values = {'model.num_stages': self.num_stages,
              'model.num_layers': self.num_layers,
              'num_frames': self.num_frames,
              'per_device_batch_size': self.per_device_batch_size,
              'model.remat': self.remat, 'model.use_creative_agent': True}
    config.update_from_flattened_dict(
        {name: value for name, value in values.items() if name not in given})


PRESETS = {
    # The seed architecture (configs/creative.py), for accelerators.
    'seed': Preset.of(run_config.Config()),
    # On CPU memory is ample, and recomputation costs time.
    'cpu-seed': Preset(2, 6, 1200, 2, 'none'),
    'cpu-small': Preset(2, 2, 300, 4, 'none'),
}

# Dense bfloat16 peak FLOP/s per device, matched against device_kind in order.
PEAK_BF16_FLOPS = (
    ('H100 PCIe', 756e12),
    ('H100', 989e12),
    ('H200', 989e12),
    ('A100', 312e12),
    ('TPU v6 lite', 918e12),
    ('TPU v5 lite', 197e12),
    ('TPU v5', 459e12),
    ('TPU v4', 275e12),
)

def define_flags():
  """The command line (defined only when run as a program)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.')
  flags.DEFINE_enum('preset', None, list(PRESETS),
                    'Model and batch size to benchmark.')
  flags.DEFINE_bool('params-only', False, 'Print parameter counts only; '
                    'compile nothing.')
  flags.DEFINE_bool('target-audio', True, 'Audio terms compare with target '
                    'waveforms in the batch; false: with the decoded targets.')
  flags.DEFINE_string('profile', None, 'Folder to trace the timed steps '
                      'into (jax.profiler), and PROFILE/top_ops.txt.')
  flags.DEFINE_integer('steps', 10, 'Timed steps after compilation and one '
                       'warm-up; 0 compiles only (FLOPs and the memory plan, '
                       'e.g. of accelerator shapes on a CPU).', lower_bound=0)


def count_params(tree) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def peak_flops(device, dtype):
  """The device's dense peak for `dtype`, where known (bfloat16 only)."""
  if dtype != jnp.bfloat16:
    return None
  for kind, peak in PEAK_BF16_FLOPS:
    if kind in device.device_kind:
      return peak
  return None


def random_batch(rng, batch_size, num_frames, latent_dim, target_audio=False):
  """Latents as precompute stores them (float16), as the step takes them."""
  input_rng, target_rng, audio_rng = jax.random.split(rng, 3)
  shape = (batch_size, num_frames, latent_dim)
  batch = {'input': jax.random.normal(input_rng, shape, jnp.float16),
           'target': jax.random.normal(target_rng, shape, jnp.float16)}
  if target_audio:
    batch['target_audio'] = jax.random.uniform(
        audio_rng, (batch_size, num_frames * latents.HOP), jnp.float16,
        -0.5, 0.5)
  return batch


def random_decoder(config, rng):
  """train_step's `decoder` argument with random weights, or None."""
  if not config.loss.uses_audio:
    return None
  dim = config.model.latent_dim
  return encodec_decoding.DecoderBundle(
      encodec_decoder.EncodecDecoder().init(
          rng, jnp.zeros((1, 7, dim)))['params'], jnp.zeros(dim),
      jnp.ones(dim))


def step_argument_shapes(config, sharding=None):
  """train_step's arguments (state, batch, rng, space, decoder) as shapes,
  one device's batch, placed by `sharding` when given: the step to compile
  for a device that is not here."""
  rng = jax.random.key(config.seed)
  shapes = lambda f, **kwargs: jax.eval_shape(
      functools.partial(f, **kwargs), rng)
  arguments = (
      shapes(functools.partial(train_step.create_train_state, config)),
      shapes(random_batch, batch_size=config.per_device_batch_size,
             num_frames=config.num_frames,
             latent_dim=config.model.latent_dim),
      jax.eval_shape(lambda: rng),
      jax.eval_shape(lambda: latent_space.identity(config.model.latent_dim)),
      shapes(functools.partial(random_decoder, config)))
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      arguments)


def activation_bytes(config, state, rng, decoder=None):
  """Bytes the generator's backward pass keeps from its forward, per device.

  What autodiff stores (jax.vjp's residuals, parameters included), before
  the compiler's buffer reuse: the figure model.remat changes, also on a CPU
  compiling for accelerator shapes (whose compiler undoes most remat). With
  a decoder, its residuals for the output's audio are added. `state` may
  be abstract (jax.eval_shape's).
  """
  shape = (config.per_device_batch_size, config.num_frames,
           config.model.latent_dim)
  clips = jax.ShapeDtypeStruct(shape, jnp.float32)
  batch = {'input': clips, 'target': clips}

  def residuals(params, batch_stats, batch):
    forward = lambda params: train_step.generator_forward(
        params, batch_stats, batch, rng, config)[0]
    return jax.vjp(forward, params)[1]

  def decoder_residuals(output):
    return jax.vjp(
        lambda out: train_step.decode_latents(decoder, out, config.model),
        output)[1]

  kept = [jax.eval_shape(residuals, state.params, state.batch_stats, batch)]
  if decoder is not None:
    kept.append(jax.eval_shape(decoder_residuals, clips))
  return sum(leaf.size * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(kept))


def time_steps(compiled, state, batch, step_rngs, profile_dir=None):
  """Wall and CPU seconds of each step after a warm-up on step_rngs[0],
  traced by jax.profiler into profile_dir when given."""
  times, cpu_times = [], []
  if len(step_rngs) == 1:
    return times, cpu_times
  state, metrics = compiled(state, batch, step_rngs[0])
  jax.block_until_ready((state, metrics))
  with (jax.profiler.trace(profile_dir, create_perfetto_trace=True)
        if profile_dir else contextlib.nullcontext()):
    for step_rng in step_rngs[1:]:
      start, cpu_start = time.perf_counter(), time.process_time()
      state, metrics = compiled(state, batch, step_rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu_start)
  return times, cpu_times


def compile_step(config, *, steps: int, target_audio: bool):
  """The step on this machine's devices, compiled, and what it runs on:
  {'compiled', 'traced', 'compile_s', 'state', 'batch', 'space', 'decoder',
  'step_rngs', 'rng'}."""
  rng = jax.random.key(config.seed)
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  split = parallel.data_sharding(mesh)
  state = xla_options.jit(
      functools.partial(train_step.create_train_state, config),
      out_shardings=replicated)(rng)
  batch = xla_options.jit(
      functools.partial(random_batch,
                        batch_size=config.per_device_batch_size *
                        jax.device_count(), num_frames=config.num_frames,
                        latent_dim=config.model.latent_dim,
                        target_audio=target_audio),
      out_shardings=split)(jax.random.fold_in(rng, 1))
  decoder = xla_options.jit(functools.partial(random_decoder, config),
                            out_shardings=replicated)(
                                jax.random.fold_in(rng, 3))
  space = jax.device_put(latent_space.identity(config.model.latent_dim),
                         replicated)
  step_rngs = jax.random.split(jax.random.fold_in(rng, 2), steps + 1)
  step = xla_options.jit(
      parallel.on_mesh(functools.partial(train_step.train_step,
                                         config=config,
                                         total_steps=steps + 1), mesh),
      in_shardings=(replicated, split, replicated, replicated, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=train_step.donated_arguments())
  start = time.perf_counter()
  traced = step.trace(state, batch, step_rngs[0], space, decoder)
  compiled = traced.lower().compile()
  return dict(compiled=compiled, traced=traced,
              compile_s=time.perf_counter() - start, state=state,
              batch=batch, space=space, decoder=decoder,
              step_rngs=step_rngs, rng=rng)


def figures(config, step, times, cpu_times) -> dict:
  """The JSON line's figures of a compiled and timed step."""
  devices = jax.devices()
  batch_size = config.per_device_batch_size * len(devices)
  compiled, state = step['compiled'], step['state']
  step_s = statistics.median(times) if times else None
  step_flops = flops.count(step['traced'].jaxpr)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = cost.get('flops') if cost else None
  peak = peak_flops(devices[0], config.model.dtype)
  plan = compiled.memory_analysis()
  return {
      'audio_terms': [name for name, weight in
                      config.loss.audio_weights.items() if weight],
      'target_audio': 'target_audio' in step['batch'],
      'device': devices[0].device_kind,
      'num_devices': len(devices),
      'compute_dtype': jnp.dtype(config.model.dtype).name,
      'attention': config.model.attention,
      'remat': config.model.remat,
      'batch_size': batch_size,
      'num_frames': config.num_frames,
      'params': count_params(state.params),
      'disc_params': count_params(state.disc_params),
      'pairs_per_s': round(batch_size / step_s, 3) if step_s else None,
      'median_step_ms': round(1e3 * step_s, 2) if step_s else None,
      # Host CPU time of this process per step (all its threads): on a CPU
      # shared with other work it shows the work done, whatever the wait.
      'median_step_cpu_s': (round(statistics.median(cpu_times), 3)
                            if cpu_times else None),
      # Tracing, lowering and compiling (or loading from the compilation
      # cache) the step.
      'compile_s': round(step['compile_s'], 2),
      # The matmuls, convolutions and attention kernels of the step,
      # recomputation included (jingle_jax.perf.flops), and XLA's own count,
      # which counts a loop body once and a custom kernel not at all.
      'flops_per_step': step_flops,
      'fusions': profiling.count_fusions(compiled),
      'xla_flops_per_step': xla_flops * len(devices) if xla_flops else None,
      'mfu': (round(step_flops / step_s / (peak * len(devices)), 4)
              if peak and step_s else None),
      'peak_memory_bytes': (devices[0].memory_stats() or {}).get(
          'peak_bytes_in_use'),
      'activation_bytes': activation_bytes(config, state, step['rng'],
                                           step['decoder']),
      # XLA's buffer plan for one device: state, batch, outputs (less what
      # is donated) and temporaries, activations included. Known before
      # running, and on every platform.
      'planned_memory_bytes': (
          plan.argument_size_in_bytes + plan.output_size_in_bytes -
          plan.alias_size_in_bytes + plan.temp_size_in_bytes
          if plan else None),
      'timed_steps': len(times),
  }


def run(flag_values):
  if flag_values.preset:
    PRESETS[flag_values.preset].apply(
        flag_values.config,
        config_flags.get_override_values(flag_values['config']))
  config = run_config.parse(flag_values.config)
  compile_cache.use(config.compilation_cache)
  if flag_values['params-only'].value:
    shapes = jax.eval_shape(functools.partial(
        train_step.create_train_state, config), jax.random.key(config.seed))
    print(json.dumps({'generator_params': count_params(shapes.params),
                      'discriminator_params': count_params(
                          shapes.disc_params)}))
    return
  step = compile_step(config, steps=flag_values.steps, target_audio=(
      flag_values['target-audio'].value and audio_losses.weighted(
          config.loss, audio_losses.TARGET_TERMS)))
  space, decoder = step['space'], step['decoder']
  times, cpu_times = time_steps(
      lambda state, batch, rng: step['compiled'](state, batch, rng, space,
                                                 decoder),
      step['state'], step['batch'], step['step_rngs'], flag_values.profile)
  if flag_values.profile and times:
    files.write_text(os.path.join(flag_values.profile, 'top_ops.txt'),
                     profiling.top_ops(flag_values.profile, len(times)))
  print(json.dumps({'preset': flag_values.preset,
                    **figures(config, step, times, cpu_times)}))


if __name__ == '__main__':
  cli.run('jingle_jax.bench', run, define_flags, required=['config'],
          logs_info=True)
