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
from absl import flags

from jingle_jax import cli
from jingle_jax.data import latents
from jingle_jax.inference import wav_files
from precompute import codec
from precompute import encodec_weights


def matching_weights(dataset, checkpoint=None, random_seed=None):
  """The EnCodec model of the weights the dataset records (random ones from
  their seed when no weights are given); WeightsError for other weights."""
  recorded = dataset.manifest['encodec_weights']
  if (checkpoint is None and random_seed is None
      and recorded.startswith(latents.RANDOM_WEIGHTS)):
    try:
      random_seed = int(recorded.removeprefix(latents.RANDOM_WEIGHTS))
    except ValueError:
      raise latents.LatentDataError(
          f'{dataset.manifest_path}: field \'encodec_weights\' is '
          f'{recorded!r}') from None
  model, loaded = encodec_weights.load(checkpoint, random_seed)
  if loaded != recorded:
    raise encodec_weights.WeightsError(
        f'{dataset.manifest_path} was encoded with EnCodec weights '
        f'{recorded}, but the weights given are {loaded}: refusing to '
        'decode with other weights than the encoder\'s')
  return model


def decode_to_wavs(model, jobs, out_dir, *, device,
                   batch_size: int) -> list[str]:
  """Writes out_dir/NAME.wav (float, 24 kHz) for each (name, clip)."""
  audio = codec.decode(model, [clip for _, clip in jobs], device=device,
                       batch_size=batch_size)
  return wav_files.write_wavs(zip([name for name, _ in jobs], audio), out_dir)


def define_flags():
  """The command line (defined only when run as a program)."""
  cli.define_decode_flags()
  cli.define_encodec_flags()


def run(f, paths):
  if not paths and not f.song:
    raise app.UsageError('nothing to decode: pass FILE.npy or --song ID')
  dataset = latents.LatentDataset(f.manifest)
  jobs = wav_files.clips_to_decode(dataset, paths, f.song)
  model = matching_weights(dataset, f['encodec-checkpoint'].value,
                           f['random-encodec'].value)
  device = encodec_weights.device(f.device)
  paths = decode_to_wavs(model.to(device), jobs, f['out-dir'].value,
                         device=device, batch_size=f['batch-size'].value)
  for path in paths:
    print(path)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['manifest', 'out-dir'])
  cli.run('precompute.torch_decode', run, takes_arguments=True,
          errors=(encodec_weights.WeightsError,))
