"""Latent datasets for tests, written as precompute.encode writes them."""

from jingle_jax.data import latent_writer
from jingle_jax.data import latents
from jingle_jax.data import manifest


def write_dataset(path, songs: dict, *, weights='random:0', dtype='float16',
                  skipped=(), source='{}.wav', decoder=None,
                  audio=None) -> manifest.Manifest:
  """Writes {id: (split, latents [frames, 128])}; returns the manifest.

  Each song's duration is its frames' (75 per second); `source` formats its
  source path from its id; `decoder` is the manifest's decoder file name;
  `audio` ({id: 24 kHz samples}) is kept when given.
  """
  writer = latent_writer.DatasetWriter(path, encodec_weights=weights,
                                       dtype=dtype, keep_audio=bool(audio))
  records = []
  for song_id, (split, values) in songs.items():
    with writer.song(song_id, source.format(song_id)) as song:
      if audio:
        song.append_audio(audio[song_id])
      song.append(values)
      records.append(dict(song.commit(len(values) / latents.FRAME_RATE),
                          split=split))
  return writer.finish(records, list(skipped), decoder=decoder)
