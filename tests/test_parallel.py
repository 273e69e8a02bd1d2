"""The data-parallel mesh and how processes join a multi-host run."""

import os
import subprocess
import sys
import textwrap

import pytest

from jingle_jax.core import parallel

CLUSTER_VARIABLES = ('SLURM_NTASKS', 'SLURM_STEP_ID', 'OMPI_COMM_WORLD_SIZE',
                     'TPU_WORKER_HOSTNAMES')


@pytest.mark.parametrize('env, several', [
    ({}, False),
    ({'SLURM_NTASKS': '4', 'SLURM_STEP_ID': '0'}, True),  # under srun
    ({'SLURM_NTASKS': '4'}, False),  # the batch script itself
    ({'SLURM_NTASKS': '1', 'SLURM_STEP_ID': '0'}, False),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'host-0,host-1'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'localhost'}, False),
])
def test_launchers_are_recognised(monkeypatch, env, several):
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert parallel._launched_as_several_processes() == several


def test_batches_split_over_four_devices():
  """Each device holds its rows of the global batch; the state is whole."""
  script = textwrap.dedent('''
      import jax, numpy as np
      from jingle_jax.core import parallel
      parallel.initialize()  # alone: does nothing
      assert jax.process_count() == 1 and jax.device_count() == 4
      mesh = parallel.make_mesh()
      split = parallel.data_sharding(mesh)
      assert parallel.local_rows(split, 8) == slice(0, 8)
      batch = {'input': np.arange(8 * 3.0).reshape(8, 3)}
      array = parallel.host_batch_to_global(batch, split, 8)['input']
      np.testing.assert_array_equal(array, batch['input'])
      for shard in array.addressable_shards:
        start = shard.index[0].start
        np.testing.assert_array_equal(shard.data,
                                      batch['input'][start:start + 2])
      # Host buffers are written again once the batch is on the devices,
      # 64-byte aligned ones too (which a CPU device may take as its own).
      for dtype in (np.float16, np.float32):
        memory = np.zeros(8 * 1024 * 4 + 64, np.uint8)
        start = -memory.ctypes.data % 64
        host = memory[start:start + 8 * 1024 * 4].view(dtype)[:8 * 1024]
        host = host.reshape(8, 1024)
        placed = parallel.host_batch_to_global({'x': host}, split, 8)['x']
        host[:] = 7
        assert not np.any(np.asarray(placed) == 7), dtype
      whole = jax.device_put(np.float32(3), parallel.replicated(mesh))
      assert len(whole.addressable_shards) == 4
      assert parallel.host_values({'x': whole}) == {'x': 3}
  ''')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  for name in CLUSTER_VARIABLES:
    env.pop(name, None)
  subprocess.run([sys.executable, '-c', script], env=env, check=True)
