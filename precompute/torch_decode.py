"""EnCodec latents -> 24 kHz wav, with the weights a latent dataset records.

  python -m precompute.torch_decode --manifest L/manifest.json --out-dir W \
      [FILE.npy ...] [--song ID ...] \
      [--encodec-checkpoint PATH | --random-encodec SEED] [--device auto]

FILE.npy holds raw latents [frames, 128] (W/FILE.wav) or a batch of them
[N, frames, 128] (W/FILE_0.wav, ...); --song ID decodes the cached latents of
a dataset song (W/ID.wav). The weights are the ones the manifest records:
random ones are rebuilt from their seed, others are the pretrained download
or --encodec-checkpoint, and weights whose identity differs from the
manifest's are refused. Prints the paths written.
"""


from absl import app

from jingle_jax import cli
from jingle_jax.data import latents
from jingle_jax.inference import wav_files
from precompute import codec
from precompute import encodec_weights


def define_flags():
  """The command line (defined only when run as a program)."""
  cli.define_decode_flags()
  cli.define_encodec_flags()


def run(flag_values, paths):
  if not paths and not flag_values.song:
    raise app.UsageError('nothing to decode: pass FILE.npy or --song ID')
  dataset = latents.LatentDataset(flag_values.manifest)
  jobs = wav_files.clips_to_decode(dataset, paths, flag_values.song)
  model = encodec_weights.matching_weights(dataset, flag_values['encodec-checkpoint'].value,
                           flag_values['random-encodec'].value)
  device = encodec_weights.device(flag_values.device)
  paths = codec.decode_to_wavs(model.to(device), jobs,
                               flag_values['out-dir'].value, device=device,
                               batch_size=flag_values['batch-size'].value)
  for path in paths:
    print(path)


if __name__ == '__main__':
  cli.run('precompute.torch_decode', run, define_flags, runs_torch=True,
          required=['manifest', 'out-dir'], takes_arguments=True)
