"""Data parallelism: one mesh over every device of every process.

The train state is replicated and batches are split along the `data` axis.
Several processes (hosts) join through jax.distributed, which must start
before anything else touches jax.
"""

import functools
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

DATA_AXIS = 'data'


def _launched_as_several_processes() -> bool:
  """Whether SLURM (srun), Open MPI or a TPU pod started several processes."""
  env = os.environ
  return (int(env.get('SLURM_NTASKS', 1)) > 1 and 'SLURM_STEP_ID' in env or
          int(env.get('OMPI_COMM_WORLD_SIZE', 1)) > 1 or
          ',' in env.get('TPU_WORKER_HOSTNAMES', ''))


def initialize(coordinator_address=None, num_processes=None,
               process_id=None) -> None:
  """Joins the other processes of a multi-host run; alone, does nothing.

  With a coordinator address the three arguments say everything; otherwise
  jax.distributed detects SLURM, Open MPI and TPU pods from the environment.
  """
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _launched_as_several_processes():
    jax.distributed.initialize()
  else:
    return
  logging.info('process %d of %d, %d of %d devices here', jax.process_index(),
               jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh() -> jax.sharding.Mesh:
  """All devices in jax.devices() order, which groups each process's devices,
  so that a process holds one block of rows of the batch.

  Auto axes: shardings inside the model follow from the step's input and
  output shardings.
  """
  return jax.sharding.Mesh(np.array(jax.devices()), (DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def on_mesh(function, mesh):
  """`function`, traced with `mesh` as the abstract mesh: what shard_maps
  inside it (the fused attention kernels) split the batch over."""
  @functools.wraps(function)
  def traced_on_mesh(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return function(*args, **kwargs)

  return traced_on_mesh


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_rows(sharding, global_batch_size: int) -> slice:
  """The rows of a global batch that this process's devices hold."""
  indices = sharding.addressable_devices_indices_map((global_batch_size,))
  starts = [index[0].start or 0 for index in indices.values()]
  stops = [index[0].stop or global_batch_size for index in indices.values()]
  rows = slice(min(starts), max(stops))
  if rows.stop - rows.start != sum(b - a for a, b in set(zip(starts, stops))):
    raise ValueError(f'the devices of process {jax.process_index()} do not '
                     'hold one contiguous block of the batch')
  return rows


def host_batch_to_global(batch, sharding, global_batch_size: int):
  """This process's rows (numpy) -> global arrays split along `data`.

  Copied: once this returns, the transfers are done and the host arrays may
  be written again. A CPU device may keep a 64-byte aligned host array as
  its own memory, whatever may_alias says (jax 0.10.2), so it gets a copy.
  """
  rows = local_rows(sharding, global_batch_size)

  def put(x):
    shape = (global_batch_size,) + x.shape[1:]
    devices, shards = [], []
    for device, index in sharding.addressable_devices_indices_map(
        shape).items():
      start, stop, _ = index[0].indices(global_batch_size)
      shard = x[start - rows.start:stop - rows.start]
      devices.append(device)
      shards.append(np.array(shard) if device.platform == 'cpu' else shard)
    return jax.make_array_from_single_device_arrays(
        shape, sharding, jax.device_put(shards, devices, may_alias=False))

  return jax.block_until_ready(jax.tree.map(put, batch))


def process_0_says(flag: bool) -> bool:
  """Process 0's `flag`, on every process."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def host_values(tree):
  """Replicated arrays -> numpy, also where other processes hold copies
  (numpy values pass as they are)."""
  return jax.tree.map(lambda x: np.asarray(
      x.addressable_data(0) if isinstance(x, jax.Array) else x), tree)
