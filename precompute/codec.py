"""Whole songs through the EnCodec encoder and decoder, 16 s at a time.

A song is cut into consecutive chunks of 16 s (1,200 frames) from its
start, each encoded or decoded on its own, as the original encoded each of
its 16 s clips: the clips of the default pairs are encoded alike. Chunks of
equal length are batched in a fixed order, so a rerun computes the same
numbers.
"""

import collections

import numpy as np
import torch

from jingle_jax import latents

HOP = latents.SAMPLE_RATE // latents.FRAME_RATE  # samples per latent frame
CHUNK_FRAMES = 16 * latents.FRAME_RATE


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


def _split(lengths, chunk):
  """(item, start) of the consecutive chunks of items of these lengths."""
  return [(item, start) for item, length in enumerate(lengths)
          for start in range(0, length, chunk)]


def encode(model, songs, *, device, batch_size: int):
  """Mono 24 kHz float32 songs -> latents [frames, 128] float32 each.

  A song of n samples gives n // 320 frames (75 per second); the samples
  after the last whole frame are dropped.
  """
  songs = [song[:len(song) // HOP * HOP] for song in songs]
  pieces = _split([len(song) for song in songs], CHUNK_FRAMES * HOP)
  chunks = [songs[item][None, start:start + CHUNK_FRAMES * HOP]
            for item, start in pieces]
  outputs = _run_batched(model.encoder, chunks, device=device,
                         batch_size=batch_size)
  encoded = [[] for _ in songs]
  for (item, _), output in zip(pieces, outputs):
    encoded[item].append(output.T)  # [frames, 128]
  result = [np.concatenate(parts) for parts in encoded]
  for song, latent in zip(songs, result):
    if len(latent) != len(song) // HOP:
      raise RuntimeError(f'EnCodec gave {len(latent)} frames for '
                         f'{len(song)} samples, expected {len(song) // HOP}')
  return result


def decode(model, clips, *, device, batch_size: int):
  """Latents [frames, 128] each -> mono 24 kHz float32 audio of
  frames * 320 samples each."""
  pieces = _split([len(clip) for clip in clips], CHUNK_FRAMES)
  chunks = [np.asarray(clips[item][start:start + CHUNK_FRAMES], np.float32).T
            for item, start in pieces]
  outputs = _run_batched(model.decoder, chunks, device=device,
                         batch_size=batch_size)
  audio = [[] for _ in clips]
  for (item, _), output in zip(pieces, outputs):
    audio[item].append(output[0])
  return [np.concatenate(parts) for parts in audio]
