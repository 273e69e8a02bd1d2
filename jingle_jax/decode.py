"""EnCodec latents -> 24 kHz wav with the JAX decoder: no torch.

  python -m jingle_jax.decode --manifest L/manifest.json --out-dir W \
      [FILE.npy ...] [--song ID ...] [--batch-size 4]

FILE.npy holds raw latents [frames, 128] (W/FILE.wav) or a batch of them
[N, frames, 128] (W/FILE_0.wav, ...); --song ID decodes the cached latents
of a dataset song (W/ID.wav). The decoder weights are the dataset's
(jingle_jax.inference.encodec_decoding), refused when they are not the
encoder's. The same inputs, names and audio as precompute.torch_decode
(EnCodec's PyTorch decoder). Prints the paths written.
"""

from absl import app

from jingle_jax import cli
from jingle_jax.data import latents
from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import wav_files


def run(flag_values, paths) -> None:
  dataset = latents.LatentDataset(flag_values.manifest)
  jobs = wav_files.clips_to_decode(dataset, paths, flag_values.song)
  if not jobs:
    raise app.UsageError('nothing to decode: pass FILE.npy or --song ID')
  params = encodec_decoding.read(dataset)
  audio = encodec_decoding.decode_clips(params, [clip for _, clip in jobs],
                                        flag_values['batch-size'].value)
  names = [name for name, _ in jobs]
  for path in wav_files.write_wavs(zip(names, audio),
                                   flag_values['out-dir'].value):
    print(path)


if __name__ == '__main__':
  cli.run('jingle_jax.decode', run, cli.define_decode_flags,
          required=['manifest', 'out-dir'], takes_arguments=True)
