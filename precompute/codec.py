"""Songs through the EnCodec encoder and decoder, 16 s at a time.

A song is cut into consecutive chunks of 16 s (1,200 frames) from its
start, each encoded or decoded on its own, as the original encoded each of
its 16 s clips: the clips of the default pairs are encoded alike. Chunks of
equal length are batched in a fixed order, so a rerun computes the same
numbers. Encoding streams: a song's audio arrives in blocks, and its
latents leave a batch of chunks at a time.
"""

import collections
import functools

import numpy as np
import torch

from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import encodec_encoding
from jingle_jax.inference import wav_files

CHUNK_FRAMES = encodec_decoding.CHUNK_FRAMES  # 16 s, as the JAX decoder's


def _run_batched(module, chunks, *, device, batch_size):
  """module([B, C, L]) over `chunks` ([C, L_i] arrays), in the given order."""
  outputs = [None] * len(chunks)
  by_length = collections.defaultdict(list)
  for index, chunk in enumerate(chunks):
    by_length[chunk.shape[-1]].append(index)
  with torch.inference_mode():
    for indices in by_length.values():
      for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        inputs = torch.from_numpy(np.stack([chunks[i] for i in batch]))
        results = module(inputs.to(device, torch.float32)).cpu().numpy()
        for index, result in zip(batch, results):
          outputs[index] = result
  return outputs


def encode(model, blocks, *, device, batch_size: int):
  """encodec_encoding.stream by EnCodec's PyTorch encoder: latents
  [frames, 128] float32 of one song's mono 24 kHz float32 audio `blocks`.

  Its calls take [1 to batch_size, 1, 16 s]: the convolutions keep a plan
  per input shape, and a shape per song made memory grow song after song.
  """
  return encodec_encoding.stream(
      functools.partial(_encode_chunks, model, device=device), blocks,
      batch_size=batch_size)


def _encode_chunks(model, samples, chunk: int, *, device) -> np.ndarray:
  """model.encoder over `samples` cut into chunks, the last zero-padded."""
  batch = encodec_encoding.chunk_batch(samples, chunk)[:, None]
  with torch.inference_mode():
    outputs = model.encoder(torch.from_numpy(batch).to(device)).cpu().numpy()
  if outputs.shape[2] != chunk // latents.HOP:
    raise RuntimeError(f'EnCodec gave {outputs.shape[2]} frames for {chunk} '
                       f'samples, expected {chunk // latents.HOP}')
  return np.concatenate(list(np.swapaxes(outputs, 1, 2)))[
      :encodec_encoding.frames_of(samples)]


def decode(model, clips, *, device, batch_size: int):
  """Latents [frames, 128] each -> mono 24 kHz float32 audio of
  frames * 320 samples each."""
  pieces = encodec_decoding.chunks([len(clip) for clip in clips], CHUNK_FRAMES)
  chunks = [np.asarray(clips[item][start:start + CHUNK_FRAMES], np.float32).T
            for item, start in pieces]
  outputs = _run_batched(model.decoder, chunks, device=device,
                         batch_size=batch_size)
  audio = [[] for _ in clips]
  for (item, _), output in zip(pieces, outputs):
    audio[item].append(output[0])
  return [np.concatenate(parts) for parts in audio]


def decode_to_wavs(model, jobs, out_dir, *, device,
                   batch_size: int) -> list[str]:
  """Writes out_dir/NAME.wav (float, 24 kHz) for each (name, clip)."""
  audio = decode(model, [clip for _, clip in jobs], device=device,
                       batch_size=batch_size)
  return wav_files.write_wavs(zip([name for name, _ in jobs], audio), out_dir)
