"""softmax(q k^T / sqrt(h)) v with dropout on the weights, two ways.

- `reference`: XLA ops; the [B, heads, T, S] weights are materialised.
- `fused`: Pallas kernels (Triton on GPU, interpreted elsewhere) that work
  block by block and never write the weights to memory; the backward pass
  recomputes them, as flash attention does.

Both drop the same weights: dropout.keep_mask of (seed, batch, head,
query, key), counted over the [B, heads, T, S] weights (see dropout.py).
Layout [B, T, heads, h] throughout.
"""

import functools
import math

import jax
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp
import numpy as np

from jingle_jax.models import dropout as dropout_lib

IMPLEMENTATIONS = ('xla', 'fused')
# The kernels' output and softmax statistics (the reference's output), as
# remat policies name them.
RESIDUALS_NAME = 'attention_residuals'
_LOG2_E = math.log2(math.e)
_MASKED = -1e30  # logit of a padding key: exp2 of it is 0
_MAX_BLOCK = 64  # queries or keys per block
_NUM_WARPS = 4
_NUM_STAGES = 2


def reference(q, k, v, dropout_rate: float = 0.0, seed=None):
  """The attention function in XLA ops.

  The softmax is normalised after the product with v: dividing the
  [B, T, heads, h] output by the row sums is the same function as dividing
  the [B, heads, T, S] weights, for a fraction of the memory passes, forward
  and backward. Logits, exponentials and row sums in float32.
  """
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  logits = jnp.einsum('btnh,bsnh->bnts', q, k,
                      preferred_element_type=jnp.float32)
  # Any per-row shift cancels in the normalisation: no gradient through it.
  logits -= jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  weights = jnp.exp(logits)
  row_sums = jnp.sum(weights, axis=-1)  # [B, heads, T]
  if dropout_rate:
    weights = dropout_lib.dropout(weights, dropout_rate, seed)
  out = jnp.einsum('bnts,bsnh->btnh', weights.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return (out / jnp.swapaxes(row_sums, 1, 2)[..., None]).astype(v.dtype)


def _cudnn_or_reference(q, k, v):
  """`reference` without dropout: cuDNN's flash attention on GPU where its
  trace-time checks accept the dtype and shapes (bfloat16/float16)."""
  if jax.default_backend() == 'gpu':
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation='cudnn')
    except (ValueError, NotImplementedError, RuntimeError):
      pass  # e.g. float32 inputs or an old cuDNN
  return reference(q, k, v)


def attend(q, k, v, dropout_rate: float, seed, implementation: str,
           remat: bool = False):
  """The attention function by `implementation` ('xla' or 'fused').

  'xla' is `reference`, or cuDNN's fused attention where nothing is
  dropped; with `remat`, its dropped-out weights are recomputed in the
  backward pass instead of stored (O(T) memory per layer instead of
  O(T^2)), and its output is named as the kernels' are, so that a
  rematerialised layer keeps it rather than recompute the weights twice.
  `seed` (uint32[2]) is unused without dropout.
  """
  if implementation == 'fused':
    return fused(q, k, v, dropout_rate, seed)
  if implementation != 'xla':
    raise ValueError(f'attention implementation {implementation!r} is not '
                     f'one of {IMPLEMENTATIONS}')
  if not dropout_rate:
    return _cudnn_or_reference(q, k, v)
  if not remat:
    return reference(q, k, v, dropout_rate, seed)
  out = jax.checkpoint(reference, static_argnums=(3,))(
      q, k, v, dropout_rate, seed)
  return checkpoint_name(out, RESIDUALS_NAME)


def fused(q, k, v, dropout_rate: float, seed=None, interpret=None):
  """`reference` by the Pallas kernels, forward and backward.

  interpret: run the kernels in Pallas's interpreter (XLA ops); by default
  everywhere but on GPU. Under a mesh (parallel.on_mesh, jax.set_mesh) the
  batch is split over all its axes and each device runs the kernels on its
  rows; the masks are those of the whole batch, whatever the number of
  devices.
  """
  if interpret is None:
    interpret = jax.default_backend() != 'gpu'
  seed = jnp.zeros((2,), jnp.uint32) if seed is None else seed
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.axis_names or mesh.size == 1:
    return _fused(q, k, v, _kernel_params(seed, 0), dropout_rate, interpret)
  rows = jax.sharding.PartitionSpec(mesh.axis_names)

  def shard(q, k, v, seed):
    offset = jax.lax.axis_index(mesh.axis_names) * q.shape[0]
    return _fused(q, k, v, _kernel_params(seed, offset), dropout_rate,
                  interpret)

  return jax.shard_map(shard, in_specs=(rows, rows, rows,
                                        jax.sharding.PartitionSpec()),
                       out_specs=rows, check_vma=False)(q, k, v, seed)


def _kernel_params(seed, batch_offset):
  """uint32[4]: the seed, the shard's first batch row, and a pad to 2^n."""
  return jnp.stack([seed[0], seed[1], jnp.asarray(batch_offset, jnp.uint32),
                    jnp.uint32(0)])


# The kernels. Sequences are padded to whole blocks (padding keys are masked
# out, padding queries cut off) and head dims to a power of two of at least
# 16 (zeros change no product), as Triton needs.


def _block_size(length: int) -> int:
  return min(_MAX_BLOCK, max(16, pl.next_power_of_2(length)))


def _padded(length: int, block: int) -> int:
  return -(-length // block) * block


class _AttentionShape:
  """The static facts of one attention call (shapes, blocks, dropout) that
  its kernels use."""

  def __init__(self, q_shape, num_keys: int, dropout_rate: float):
    self.batch, self.queries, self.heads, self.head_dim = q_shape
    self.keys = num_keys
    self.block_q = _block_size(self.queries)
    self.block_k = _block_size(num_keys)
    self.padded_queries = _padded(self.queries, self.block_q)
    self.padded_keys = _padded(num_keys, self.block_k)
    self.padded_head_dim = max(16, pl.next_power_of_2(self.head_dim))
    self.rate = dropout_rate
    self.keep = dropout_lib.keep_probability(dropout_rate)
    self.scale = self.head_dim ** -0.5

  def pad(self, x, length):
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0),
                       (0, self.padded_head_dim - x.shape[3])))

  def unpad(self, x, length):
    return x[:, :length, :, :self.head_dim]

  def matmul_flops(self, matmuls: int) -> int:
    """FLOPs of `matmuls` [T, S] x h products over all heads (unpadded)."""
    return 2 * matmuls * self.batch * self.heads * (
        self.queries * self.keys * self.head_dim)

  # What the kernels compute of a [block_q, block_k] block.

  def logits(self, q, k, key_start):
    """Base-2 logits (exp2 is the cheaper exponential), padding masked."""
    s = plgpu.dot(q, k.T) * (self.scale * _LOG2_E)
    if self.keys % self.block_k:
      keys = key_start + jax.lax.iota(jnp.int32, self.block_k)
      s = jnp.where(keys[None, :] < self.keys, s, _MASKED)
    return s

  def head_row(self, params_ref):
    """The flat row of this program's (batch, head) query 0 in the
    unpadded [B, heads, T, S] weights (program ids are read at the
    kernel's top level, as Pallas's interpreter needs)."""
    batch = pl.program_id(1) + params_ref[2].astype(jnp.int32)
    return (batch * self.heads + pl.program_id(2)) * self.queries

  def dropped(self, params_ref, x, first_row, key_start):
    """x with the dropped weights' entries zeroed (not divided by keep).

    params_ref: (seed0, seed1, the shard's first batch row, 0); first_row:
    the flat row of the block's first query. The counters are
    dropout.dropout's over the unpadded [B, heads, T, S] weights: row
    (b * heads + n) * T + t, group s // 4.
    """
    if not self.rate:
      return x
    rows = first_row + jax.lax.iota(jnp.int32, self.block_q)
    groups = key_start // dropout_lib.DRAWS_PER_HASH + jax.lax.iota(
        jnp.int32, self.block_k // dropout_lib.DRAWS_PER_HASH)
    counters = (rows.astype(jnp.uint32)[:, None] *
                np.uint32(dropout_lib.num_groups(self.keys)) +
                groups.astype(jnp.uint32)[None, :])
    keep = dropout_lib.keep_mask(params_ref, counters, self.rate)
    return jnp.where(keep, x, 0.0)

  def block_grads(self, params_ref, q, k, v, d_out, lse, delta, first_row,
                  key_start):
    """(dropped weights divided by keep, d loss / d natural logits)."""
    p = jnp.exp2(self.logits(q, k, key_start) - lse[:, None])
    d_dropped = plgpu.dot(d_out, v.T)  # d loss / d dropped weights
    dp = self.dropped(params_ref, d_dropped, first_row, key_start)
    d_logits = p * (dp / self.keep - delta[:, None])
    return (self.dropped(params_ref, p, first_row, key_start) / self.keep,
            d_logits)


def _forward_kernel(params_ref, q_ref, k_ref, v_ref, out_ref, lse_ref, *,
                    problem):
  """One query block: online softmax over the key blocks."""
  first_row = problem.head_row(params_ref) + pl.program_id(0) * problem.block_q
  q = q_ref[...]

  def body(index, carry):
    out, row_max, row_sum = carry
    keys = pl.ds(index * problem.block_k, problem.block_k)
    s = problem.logits(q, k_ref[keys, :], index * problem.block_k)
    new_max = jnp.maximum(row_max, jnp.max(s, axis=1))
    correction = jnp.exp2(row_max - new_max)
    p = jnp.exp2(s - new_max[:, None])
    row_sum = row_sum * correction + jnp.sum(p, axis=1)  # before dropout
    p = problem.dropped(params_ref, p, first_row, index * problem.block_k)
    v = v_ref[keys, :]
    out = out * correction[:, None] + plgpu.dot(p.astype(v.dtype), v)
    return out, new_max, row_sum

  out, row_max, row_sum = jax.lax.fori_loop(
      0, problem.padded_keys // problem.block_k, body,
      (jnp.zeros(q.shape, jnp.float32),
       jnp.full((problem.block_q,), -jnp.inf, jnp.float32),
       jnp.zeros((problem.block_q,), jnp.float32)))
  out_ref[...] = (out / (row_sum * problem.keep)[:, None]).astype(out_ref.dtype)
  lse_ref[...] = row_max + jnp.log2(row_sum)


def _key_grads_kernel(params_ref, q_ref, k_ref, v_ref, d_out_ref, lse_ref,
                      delta_ref, dk_ref, dv_ref, *, problem):
  """dk, dv of one key block: a loop over the query blocks."""
  key_start = pl.program_id(0) * problem.block_k
  head_row = problem.head_row(params_ref)
  k, v = k_ref[...], v_ref[...]

  def body(index, carry):
    dk, dv = carry
    queries = pl.ds(index * problem.block_q, problem.block_q)
    q, d_out = q_ref[queries, :], d_out_ref[queries, :]
    p, d_logits = problem.block_grads(params_ref, q, k, v, d_out,
                                 lse_ref[queries], delta_ref[queries],
                                 head_row + index * problem.block_q, key_start)
    dv += plgpu.dot(p.astype(d_out.dtype).T, d_out)
    dk += plgpu.dot(d_logits.astype(q.dtype).T, q)
    return dk, dv

  zeros = jnp.zeros(k.shape, jnp.float32)
  dk, dv = jax.lax.fori_loop(0, problem.padded_queries // problem.block_q, body,
                             (zeros, zeros))
  dk_ref[...] = (dk * problem.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _query_grads_kernel(params_ref, q_ref, k_ref, v_ref, d_out_ref, lse_ref,
                        delta_ref, dq_ref, *, problem):
  """dq of one query block: a loop over the key blocks."""
  first_row = problem.head_row(params_ref) + pl.program_id(0) * problem.block_q
  q, d_out, lse, delta = q_ref[...], d_out_ref[...], lse_ref[...], delta_ref[
      ...]

  def body(index, dq):
    keys = pl.ds(index * problem.block_k, problem.block_k)
    k = k_ref[keys, :]
    _, d_logits = problem.block_grads(params_ref, q, k, v_ref[keys, :], d_out,
                                 lse, delta, first_row, index * problem.block_k)
    return dq + plgpu.dot(d_logits.astype(k.dtype), k)

  dq = jax.lax.fori_loop(0, problem.padded_keys // problem.block_k, body,
                         jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = (dq * problem.scale).astype(dq_ref.dtype)


def _spec(shape, block=None):
  """BlockSpec over grid (blocks, B, heads) of a [B, L, heads, h] or
  [B, heads, L] array: cut into `block`s along L, or whole (None)."""
  if len(shape) == 3:
    if block is None:
      return pl.BlockSpec((None, None, shape[2]), lambda i, b, n: (b, n, 0))
    return pl.BlockSpec((None, None, block), lambda i, b, n: (b, n, i))
  if block is None:
    return pl.BlockSpec((None, shape[1], None, shape[3]),
                        lambda i, b, n: (b, 0, n, 0))
  return pl.BlockSpec((None, block, None, shape[3]),
                      lambda i, b, n: (b, i, n, 0))


def _pallas_call(kernel, problem, name, num_blocks, matmuls, in_specs,
                 outputs, interpret):
  """The kernel over grid (num_blocks, B, heads); outputs: [(array, block)].

  The cost estimate counts the kernel's [T, S] x h matmuls (what the bench's
  analytic FLOP count reads).
  """
  return pl.pallas_call(
      functools.partial(kernel, problem=problem),
      grid=(num_blocks, problem.batch, problem.heads),
      in_specs=[pl.BlockSpec((4,), lambda i, b, n: (0,))] + in_specs,
      out_specs=[_spec(shape, block) for (shape, _), block in outputs],
      out_shape=[jax.ShapeDtypeStruct(shape, dtype)
                 for (shape, dtype), _ in outputs],
      compiler_params=plgpu.CompilerParams(num_warps=_NUM_WARPS,
                                           num_stages=_NUM_STAGES),
      cost_estimate=pl.CostEstimate(flops=problem.matmul_flops(matmuls),
                                    transcendentals=0, bytes_accessed=0),
      interpret=interpret, name=name)


def _forward(q, k, v, params, dropout_rate, interpret):
  """(out, lse [B, heads, padded T]) of the forward kernel."""
  problem = _AttentionShape(q.shape, k.shape[1], dropout_rate)
  q_padded = problem.pad(q, problem.padded_queries)
  k_padded, v_padded = (problem.pad(x, problem.padded_keys) for x in (k, v))
  out, lse = _pallas_call(
      _forward_kernel, problem, 'attention_forward',
      problem.padded_queries // problem.block_q, 2,
      [_spec(q_padded.shape, problem.block_q), _spec(k_padded.shape),
       _spec(v_padded.shape)],
      [((q_padded.shape, q.dtype), problem.block_q),
       (((problem.batch, problem.heads, problem.padded_queries),
         jnp.float32), problem.block_q)],
      interpret)(params, q_padded, k_padded, v_padded)
  return problem.unpad(out, problem.queries), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(q, k, v, params, dropout_rate, interpret):
  return _forward(q, k, v, params, dropout_rate, interpret)[0]


def _fused_forward(q, k, v, params, dropout_rate, interpret):
  out, lse = _forward(q, k, v, params, dropout_rate, interpret)
  # Named, so that a remat policy can keep them rather than run this again.
  out, lse = (checkpoint_name(x, RESIDUALS_NAME) for x in (out, lse))
  return out, (q, k, v, params, out, lse)


def _fused_backward(dropout_rate, interpret, residuals, d_out):
  q, k, v, params, out, lse = residuals
  problem = _AttentionShape(q.shape, k.shape[1], dropout_rate)
  # sum_s dP * P over a row is d_out . out, with or without dropout.
  delta = jnp.einsum('btnh,btnh->bnt', out.astype(jnp.float32),
                     d_out.astype(jnp.float32))
  delta = jnp.pad(delta, ((0, 0), (0, 0),
                          (0, problem.padded_queries - problem.queries)))
  q_padded, d_out_padded = (problem.pad(x, problem.padded_queries)
                            for x in (q, d_out))
  k_padded, v_padded = (problem.pad(x, problem.padded_keys) for x in (k, v))
  args = (params, q_padded, k_padded, v_padded, d_out_padded, lse, delta)
  dk, dv = _pallas_call(
      _key_grads_kernel, problem, 'attention_key_grads',
      problem.padded_keys // problem.block_k, 4,
      [_spec(q_padded.shape), _spec(k_padded.shape, problem.block_k),
       _spec(v_padded.shape, problem.block_k), _spec(d_out_padded.shape),
       _spec(lse.shape), _spec(delta.shape)],
      [((k_padded.shape, k.dtype), problem.block_k),
       ((v_padded.shape, v.dtype), problem.block_k)], interpret)(*args)
  (dq,) = _pallas_call(
      _query_grads_kernel, problem, 'attention_query_grads',
      problem.padded_queries // problem.block_q, 3,
      [_spec(q_padded.shape, problem.block_q), _spec(k_padded.shape),
       _spec(v_padded.shape), _spec(d_out_padded.shape, problem.block_q),
       _spec(lse.shape, problem.block_q), _spec(delta.shape, problem.block_q)],
      [((q_padded.shape, q.dtype), problem.block_q)], interpret)(*args)
  return (problem.unpad(dq, problem.queries), problem.unpad(dk, problem.keys),
          problem.unpad(dv, problem.keys), None)


_fused.defvjp(_fused_forward, _fused_backward)
