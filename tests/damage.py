"""Damage done to checkpoints, as a disk or a killed copy would do it."""

import glob
import os


def damage(workdir, step, how):
  """Damages the largest array file of checkpoint `step`: `truncate` cuts it
  in half; `zeros` overwrites 4 kB of it, which Orbax reads back without
  complaint (the checksum does not)."""
  files = glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state',
                                 '**', 'd', '*'), recursive=True)
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, 'rb').read())
  if how == 'truncate':
    data = data[:len(data) // 2]
  else:
    middle = len(data) // 3
    data[middle:middle + 4096] = bytes(4096)
  with open(path, 'wb') as f:
    f.write(data)
