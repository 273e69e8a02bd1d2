"""Model structure, parameter counts and training/evaluation behaviour."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jingle_jax.config import run_config
from jingle_jax.models import AttentionMaskGenerator
from jingle_jax.models import baselines
from jingle_jax.models import CascadeTransformer
from jingle_jax.models import CreativeAgent
from jingle_jax.models import LatentDiscriminator
from jingle_jax.models import ModelConfig
from jingle_jax.models.cascade import CascadeStage
from jingle_jax.models.cascade import sinusoidal_positions
from jingle_jax.models.cascade import SpectralNormDense
from jingle_jax.models.cascade import stack_layers
from jingle_jax.models.cascade import unstack_layers
from jingle_jax.training import train_step


def count(tree):
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def latents(seed, shape):
  input_rng, target_rng = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(input_rng, shape),
          jax.random.normal(target_rng, shape))


TINY = dict(latent_dim=16, num_stages=2, num_layers=1, num_heads=2,
            mask_hidden=16, mask_heads=2, remat='none')


def tiny(**changes):
  """The tiny model, with `changes`."""
  return CascadeTransformer(ModelConfig(**dict(TINY, **changes)))


def test_seed_architecture_has_27_449_410_parameters():
  state = jax.eval_shape(
      functools.partial(train_step.create_train_state, run_config.Config()),
      jax.random.key(0))
  params = state.params
  assert count(params) == 27_449_410
  assert count(params['cascade_stages_0']) == 4_772_480
  assert count(params['cascade_stages_1']) == 10_697_600
  assert count(params['cascade_stages_2']) == 10_697_600
  assert count(params['creative_agent']['mask_generator']) == 1_083_904
  assert count(params['creative_agent']['discriminator']) == 197_826
  assert count(state.disc_params) == 3_802_881  # the GAN's, counted apart
  # Spectral-norm vectors are state, not parameters.
  assert set(state.batch_stats['cascade_stages_2']['output_proj']) == {'u', 'v'}
  # A stage's layers are stacked for the scan.
  layers = params['cascade_stages_1']['layers']
  assert layers['self_attn']['in_proj_kernel'].shape == (6, 384, 3 * 384)
  assert set(params['cascade_stages_0']) == {
      'input_norm', 'post_norm', 'output_proj', 'layers'}
  # PyTorch-mappable names.
  unstacked = jax.eval_shape(unstack_layers, params)
  layer = unstacked['cascade_stages_1']['layers_5']
  assert layer['self_attn']['in_proj_kernel'].shape == (384, 3 * 384)
  assert layer['linear1']['kernel'].shape == (384, 4 * 384)
  assert set(layer) == {'self_attn', 'linear1', 'linear2', 'norm1', 'norm2'}
  assert set(unstacked['cascade_stages_0']) == {
      'input_norm', 'post_norm', 'output_proj',
      *[f'layers_{i}' for i in range(6)]}
  assert set(params['creative_agent']['mask_generator']['input_analyzer']) == {
      'layers_0', 'layers_2'}


def test_untrained_masks_are_75_percent_complementary():
  # Raw-scale latents: the pretrained EnCodec's have an RMS of about 5.7.
  inputs, targets = (5.7 * x for x in latents(0, (4, 300, 128)))
  generator = AttentionMaskGenerator(ModelConfig())
  variables = generator.init(jax.random.key(1), inputs, targets, train=False)
  apply = jax.jit(functools.partial(generator.apply, variables),
                  static_argnames='train')
  for train in (False, True):
    input_mask, target_mask = apply(inputs, targets, train=train,
                                    rngs={'dropout': jax.random.key(2)})
    for mask in (input_mask, target_mask):
      assert mask.shape == inputs.shape
      assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    complementarity = 1.0 - float(jnp.mean(input_mask * target_mask))
    assert complementarity == pytest.approx(0.75, abs=0.03)


def test_hard_masks_are_binary_exact_complements():
  inputs, targets = latents(0, (2, 32, 16))
  generator = AttentionMaskGenerator(ModelConfig(
      latent_dim=16, mask_hidden=16, mask_heads=2, hard_masks=True))
  params = generator.init(jax.random.key(1), inputs, targets,
                          train=False)['params']

  @functools.partial(jax.jit, static_argnames='train')
  def masks(params, noise_seed, train=True):
    return generator.apply({'params': params}, inputs, targets, train=train,
                           rngs={'noise': jax.random.key(noise_seed),
                                 'dropout': jax.random.key(0)})

  for input_mask, target_mask in (masks(params, 0), masks(params, 0, False)):
    assert set(np.unique(np.asarray(input_mask))) == {0.0, 1.0}
    np.testing.assert_array_equal(input_mask + target_mask, 1.0)
  assert not np.array_equal(masks(params, 0)[0], masks(params, 1)[0])
  # Straight-through: the binary mask still passes gradients to the logits.
  grads = jax.grad(lambda p: jnp.sum(masks(p, 0)[0] * inputs))(params)
  head = grads['input_mask_generator']['layers_2']['kernel']
  assert float(jnp.abs(head).sum()) > 0.0


@pytest.fixture(scope='module')
def tiny_model():
  model = tiny()
  inputs, targets = latents(0, (2, 32, 16))
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1), inputs, targets)

  @functools.partial(jax.jit, static_argnames='train')
  def apply(variables, inputs, targets, rng, train):
    noise_rng, dropout_rng = jax.random.split(rng)
    return model.apply(variables, inputs, targets, train=train,
                       rngs={'noise': noise_rng, 'dropout': dropout_rng},
                       mutable=['batch_stats'])

  return variables, apply


def test_evaluation_is_deterministic_and_training_follows_the_rng(tiny_model):
  variables, apply = tiny_model
  inputs, targets = latents(2, (2, 32, 16))
  run = lambda seed, train: apply(variables, inputs, targets,
                                  jax.random.key(seed), train)
  (eval_a, stats_a), (eval_b, _) = run(0, False), run(1, False)
  np.testing.assert_array_equal(eval_a.output, eval_b.output)
  assert jax.tree.all(jax.tree.map(np.array_equal, stats_a['batch_stats'],
                                   variables['batch_stats']))
  (train_a, stats), (train_a2, _), (train_b, _) = (run(0, True), run(0, True),
                                                  run(1, True))
  np.testing.assert_array_equal(train_a.output, train_a2.output)
  assert not np.allclose(train_a.output, train_b.output)
  assert not np.allclose(train_a.output, eval_a.output)
  # One power iteration per training call updates the spectral-norm state.
  u = lambda tree: tree['batch_stats']['cascade_stages_0']['output_proj']['u']
  assert not np.allclose(u(stats), u(variables))


def test_remat_saves_memory_and_keeps_training_gradients(tiny_model):
  """Recomputation (dropout masks included) gives the same gradients."""
  variables, _ = tiny_model
  inputs, targets = latents(4, (2, 32, 16))
  output_weights, mask_weights = latents(7, (2, 32, 16))

  def loss(params, remat):  # linear in the outputs: well conditioned
    out, _ = tiny(remat=remat).apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, inputs,
        targets, train=True, mutable=['batch_stats'],
        rngs={'noise': jax.random.key(5), 'dropout': jax.random.key(6)})
    return (jnp.sum(out.output * output_weights) +
            jnp.sum(out.input_mask * mask_weights))

  def stored_bytes(remat):  # what the backward pass keeps from the forward
    residuals = jax.eval_shape(
        lambda p: jax.vjp(lambda p: loss(p, remat), p)[1],
        variables['params'])
    return sum(leaf.size * leaf.dtype.itemsize
               for leaf in jax.tree.leaves(residuals))

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  value, grads = grad(variables['params'], 'none')
  for remat in ('attention', 'layers'):
    remat_value, remat_grads = grad(variables['params'], remat)
    np.testing.assert_allclose(remat_value, value, rtol=1e-5)
    jax.tree.map(  # fusion may round differently: 1e-4 of each leaf's scale
        lambda a, b: np.testing.assert_allclose(
            a, b, atol=1e-4 * np.abs(b).max()), remat_grads, grads)
  assert stored_bytes('none') > stored_bytes('attention') > stored_bytes(
      'layers')


def test_fused_attention_trains_as_the_xla_one(tiny_model):
  """The kernels drop the same weights: same training outputs and grads."""
  variables, _ = tiny_model
  inputs, targets = latents(12, (2, 32, 16))
  output_weights = latents(13, (2, 32, 16))[0]

  def loss(params, attention):
    out, _ = tiny(attention_impl=attention, remat='layers').apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, inputs,
        targets, train=True, mutable=['batch_stats'],
        rngs={'noise': jax.random.key(5), 'dropout': jax.random.key(6)})
    return jnp.sum(out.output * output_weights) + jnp.sum(out.input_mask)

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (value, grads), (fused_value, fused_grads) = (
      grad(variables['params'], 'xla'), grad(variables['params'], 'fused'))
  np.testing.assert_allclose(fused_value, value, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, atol=1e-4 * np.abs(b).max()), fused_grads, grads)


def test_layers_stack_and_unstack():
  """Layer l of the scan's stacked parameters is PyTorch's layers.{l}."""
  params = tiny(num_layers=3).init(
      jax.random.key(0), *latents(0, (1, 8, 16)), train=False)['params']
  unstacked = unstack_layers(params)
  kernels = [unstacked['cascade_stages_1'][f'layers_{layer}']['linear1'][
      'kernel'] for layer in range(3)]
  for layer, kernel in enumerate(kernels):
    np.testing.assert_array_equal(
        kernel, params['cascade_stages_1']['layers']['linear1']['kernel'][
            layer])
  assert not np.array_equal(kernels[0], kernels[2])  # drawn apart by init
  assert 'layers' not in unstacked['cascade_stages_1']
  jax.tree.map(np.testing.assert_array_equal, stack_layers(unstacked), params)


@pytest.mark.parametrize('train', [False, True])
def test_rms_scale_stays_in_range_and_clips(tiny_model, train):
  variables, apply = tiny_model
  inputs, targets = latents(3, (2, 32, 16))
  scales = {}
  for gain in (1e-3, 1.0, 1e3):
    out, _ = apply(variables, gain * inputs, gain * targets,
                   jax.random.key(0), train)
    scales[gain] = np.asarray(out.rms_scale)
    assert np.all((scales[gain] >= 0.7) & (scales[gain] <= 1.5))
  # Tiny latents make the projection dominate: every stage clips at 0.7.
  # Huge ones make the residual dominate: stage 0's (x + y) / 2 has 1/sqrt(2)
  # of the RMS of independent x and y, so it is scaled by sqrt(2) to
  # p = (x + y) / sqrt(2); stage 1's (x + p + y) / 3 then has (1 + sqrt(2)) / 3
  # of their RMS.
  np.testing.assert_allclose(scales[1e-3], 0.7)
  np.testing.assert_allclose(scales[1e3][:, 0], np.sqrt(2), rtol=0.05)
  np.testing.assert_allclose(scales[1e3][:, 1], 3 / (1 + np.sqrt(2)),
                             rtol=0.05)


def test_rms_scale_clips_at_1_5_when_the_residual_cancels():
  model = tiny(use_creative_agent=False)
  inputs, _ = latents(4, (2, 32, 16))
  inputs = 1e3 * inputs
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1), inputs, -inputs)
  out = jax.jit(functools.partial(model.apply, train=False))(
      variables, inputs, -inputs)
  np.testing.assert_allclose(out.rms_scale, 1.5)


def test_every_stage_output_is_rescaled_before_the_next_stage():
  """Stage s's output, scaled and clipped, is what stage s + 1 receives.

  Rebuilt from the stages themselves; with an intermediate scale clipped,
  scaling once at the end would give another output.
  """
  model = tiny(num_stages=3, use_creative_agent=False)
  inputs, targets = (1e-2 * x for x in latents(11, (2, 32, 16)))
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1), inputs, targets)
  out = jax.jit(functools.partial(model.apply, train=False))(
      variables, inputs, targets)
  example_rms = lambda x: jnp.sqrt(jnp.mean(jnp.square(x), axis=(1, 2)) +
                                   1e-8)[:, None, None]
  reference = jnp.sqrt((example_rms(inputs) ** 2 + example_rms(targets) ** 2)
                       / 2)

  def stage(index, stage_input):
    return CascadeStage(model.config).apply(
        {name: tree[f'cascade_stages_{index}']
         for name, tree in variables.items()}, stage_input, train=False)

  def cascade(scale_every_stage):
    previous = None
    for index in range(3):
      parts = [inputs, targets] if previous is None else [
          inputs, previous, targets]
      out = stage(index, jnp.concatenate(parts, axis=-1)) + sum(parts) / len(
          parts)
      if scale_every_stage or index == 2:
        out *= jnp.clip(reference / (example_rms(out) + 1e-8), 0.7, 1.5)
      previous = out
    return previous

  assert np.all(np.asarray(out.rms_scale)[:, :2] == np.float32(0.7))
  np.testing.assert_allclose(out.output, cascade(True), rtol=1e-4,
                             atol=1e-5)
  assert not np.allclose(out.output, cascade(False), rtol=1e-2)


def test_bfloat16_compute_keeps_float32_parameters_and_results(tiny_model):
  variables, _ = tiny_model
  assert tiny().config.dtype == jnp.float32  # tests run on CPU
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  inputs, targets = latents(8, (2, 32, 16))
  outputs = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = tiny(compute_dtype=jnp.dtype(dtype).name)
    outputs[dtype] = jax.jit(functools.partial(model.apply, train=False))(
        variables, inputs, targets)
  low, full = outputs[jnp.bfloat16], outputs[jnp.float32]
  for name in ('output', 'input_mask', 'target_mask'):
    assert getattr(low, name).dtype == jnp.float32, name
  error = np.sqrt(np.mean(np.square(low.output - full.output)))
  assert error < 0.05 * np.sqrt(np.mean(np.square(full.output)))


def _equations(jaxpr):
  """Every equation of a jaxpr, those of nested jaxprs (jit, vjp) included."""
  for equation in jaxpr.eqns:
    yield equation
    for param in equation.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          yield from _equations(sub)


@pytest.mark.parametrize('train', [False, True])
def test_bfloat16_matmuls_keep_softmax_and_statistics_in_float32(tiny_model,
                                                                  train):
  variables, _ = tiny_model
  model = tiny(compute_dtype='bfloat16')
  inputs, targets = latents(9, (2, 32, 16))
  apply = functools.partial(
      model.apply, train=train, mutable=['batch_stats'],
      rngs={'noise': jax.random.key(0), 'dropout': jax.random.key(1)})
  jaxpr = jax.make_jaxpr(apply)(variables, inputs, targets).jaxpr
  operand_dtypes = {}
  for equation in _equations(jaxpr):
    operand_dtypes.setdefault(equation.primitive.name, set()).update(
        var.aval.dtype.name for var in equation.invars)
  assert 'bfloat16' in operand_dtypes['dot_general']
  assert operand_dtypes['conv_general_dilated'] == {'bfloat16'}
  # Softmax (exp, max, sum) and LayerNorm/RMS statistics (sum, rsqrt).
  for primitive in ('exp', 'reduce_max', 'reduce_sum', 'rsqrt'):
    assert operand_dtypes[primitive] == {'float32'}, primitive


def test_spectral_norm_dense_tracks_the_largest_singular_value():
  layer = SpectralNormDense(6)
  x = jax.random.normal(jax.random.key(0), (4, 10))
  variables = layer.init(jax.random.key(1), x, update_stats=False)
  kernel = np.asarray(variables['params']['kernel'])
  top = np.linalg.svd(kernel, compute_uv=False)[0]
  step = jax.jit(lambda v: layer.apply(v, x, update_stats=True,
                                       mutable=['batch_stats'])[1])
  stats = variables['batch_stats']
  for _ in range(50):
    stats = step({**variables, 'batch_stats': stats})['batch_stats']
  sigma = float(stats['v'] @ kernel @ stats['u'])
  assert sigma == pytest.approx(top, rel=1e-3)
  # Evaluation divides by the stored estimate and leaves it alone.
  y, updated = layer.apply({**variables, 'batch_stats': stats}, x,
                           update_stats=False, mutable=['batch_stats'])
  np.testing.assert_allclose(y, x @ (kernel / sigma) +
                             variables['params']['bias'], rtol=1e-5,
                             atol=1e-6)
  assert jax.tree.all(jax.tree.map(np.array_equal, updated['batch_stats'],
                                   stats))


def test_fixed_masking_mode_applies_the_baseline():
  # Large latents: the residual, not the untrained projection, dominates.
  inputs, targets = (100 * x for x in latents(5, (2, 300, 16)))
  model = tiny(use_creative_agent=False, fixed_masking='temporal')
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1), inputs, targets)
  assert 'creative_agent' not in variables['params']
  out = jax.jit(functools.partial(model.apply, train=False))(
      variables, inputs, targets)
  expected_in, expected_tgt = baselines.temporal_masks(inputs, targets)
  np.testing.assert_array_equal(out.input_mask, expected_in)
  np.testing.assert_array_equal(out.target_mask, expected_tgt)
  assert out.output.shape == inputs.shape
  # Fixed masks are not RMS-restored, and the output's RMS follows the masked
  # latents the stages receive (DESIGN.md 4.3).
  example_rms = lambda x: np.sqrt(np.mean(np.square(x), axis=(1, 2)))
  masked_rms = np.sqrt((example_rms(inputs * expected_in) ** 2 +
                        example_rms(targets * expected_tgt) ** 2) / 2)
  scale = np.asarray(out.rms_scale)[:, -1]
  unclipped = (scale > 0.7) & (scale < 1.5)
  assert unclipped.any()
  np.testing.assert_allclose(example_rms(out.output)[unclipped],
                             masked_rms[unclipped], rtol=1e-4)


@pytest.mark.parametrize('settings, target_frames, message', [
    (dict(max_len=16), 32, '32 frames exceed max_len 16'),
    ({}, 30, 'differ in shape'),
])
def test_bad_inputs_are_named(settings, target_frames, message):
  inputs, _ = latents(0, (1, 32, 16))
  _, targets = latents(0, (1, target_frames, 16))
  with pytest.raises(ValueError, match=message):
    tiny(**settings).init(jax.random.key(0), inputs, targets, train=False)


def test_style_discriminator_scores():
  inputs, targets = latents(6, (3, 64, 16))
  agent = CreativeAgent(ModelConfig(**TINY))
  variables = agent.init(jax.random.key(1), inputs, targets, train=False)
  real_fake, style = agent.apply(variables, inputs,
                                 method=CreativeAgent.judge_quality)
  for score in (real_fake, style):
    assert score.shape == (3,)
    assert np.all((score > 0) & (score < 1))


def test_latent_discriminator_logits_and_dropout():
  inputs, _ = latents(7, (3, 40, 128))
  disc = LatentDiscriminator()
  variables = disc.init(jax.random.key(1), inputs, train=False)
  logits = disc.apply(variables, inputs, train=False)
  assert logits.shape == (3,) and logits.dtype == jnp.float32
  dropped = [disc.apply(variables, inputs, train=True,
                        rngs={'dropout': jax.random.key(seed)})
             for seed in (0, 1)]
  assert not np.allclose(dropped[0], dropped[1])


def test_sinusoidal_positions():
  table = sinusoidal_positions(2000, 8)
  assert table.shape == (2000, 8)
  np.testing.assert_allclose(table[0, 0::2], 0.0)
  np.testing.assert_allclose(table[0, 1::2], 1.0)
  np.testing.assert_allclose(table[7, 0], np.sin(7.0), rtol=1e-6)
  np.testing.assert_allclose(table[7, 3], np.cos(7.0 * 10000 ** (-2 / 8)),
                             rtol=1e-5)
