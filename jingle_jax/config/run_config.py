"""A run's config: every field declared once (here and in models/config.py),
checked once at a command's entry, and recorded in the workdir.

`default_config()` is the seed recipe as an ml_collections config, which
configs/*.py change and `--config.FIELD=VALUE` overrides; `parse` turns it
into the frozen `Config` that the rest of the code takes its parts of.
A workdir records it (jingle_jax/training/run_dir.py); a config recorded
before a field existed reads as that field's `recorded_before` value.
"""

import dataclasses

import ml_collections

from jingle_jax.config.fields import build
from jingle_jax.config.fields import ConfigError
from jingle_jax.config.fields import field
from jingle_jax.config.fields import part
from jingle_jax.data.config import DataConfig
from jingle_jax.models.config import ModelConfig

__all__ = ['Config', 'ConfigError', 'DataConfig', 'LossConfig', 'ModelConfig',
           'OptimConfig']
# Configs recorded before config.data held these at the top: {old: new name}.
_FLAT_DATA_FIELDS = {'data_dir': 'dir', 'normalise_latents':
                     'normalise_latents', 'window_hop': 'window_hop',
                     'shuffle_targets': 'shuffle_targets',
                     'prefetch_batches': 'prefetch_batches'}


def _comes_or_goes(old, new) -> bool:
  return (old == 0) != (new == 0)  # a part of the state comes or goes


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss weights (DESIGN.md 4.5, 4.5a)."""
  input_weight: float = field(0.0)  # rms(output - input); the seed's is 0.
  target_weight: float = field(0.0)  # rms(output - target): 0 = no copying.
  mask_reg_weight: float = field(0.1)  # weight of mask_reg.
  # mask_reg = overlap_weight x overlap + coverage_weight x coverage
  #   + temporal_weight x temporal (DESIGN.md 4.1); the published code later
  #   raised overlap_weight to 10, as runs recorded without it had.
  overlap_weight: float = field(1.0, recorded_before=10.0)  # mean(m_in m_tgt).
  # mean((m_in + m_tgt - 1)^2).
  coverage_weight: float = field(0.5, recorded_before=0.5)
  # The too-static-masks penalty.
  temporal_weight: float = field(5.0, recorded_before=5.0)
  balance_weight: float = field(5.0)  # the 50/50 mask balance term.
  # Balance each pair's masks rather than the batch's means (a stabiliser,
  # DESIGN.md 4.4a): the masks of songs not trained on then lean less.
  balance_per_pair: bool = field(False, recorded_before=False)
  # The adversarial loss; 0 disables the GAN.
  gan_weight: float = field(0.1, changes_checkpoints=_comes_or_goes)
  # The discriminator's stabilisers (DESIGN.md 4.4a); 0, the seed's, is off.
  # R1 penalty on real samples: r1_weight / 2 x mean |dD(real)/d real|^2.
  r1_weight: float = field(0.0, minimum=0.0, recorded_before=0.0)
  # One-sided label smoothing: D's label for real samples is 1 - this.
  disc_label_smoothing: float = field(0.0, minimum=0.0, below=0.5,
                                      recorded_before=0.0)
  # Audio-domain terms (DESIGN.md 4.5a) on the output decoded by EnCodec's
  # frozen decoder inside the step (the dataset needs decoder weights); a
  # weight of 0 keeps the decoder out of the compiled step. The seed run had
  # no reconstruction, STFT or mel term; its correlation weight is not
  # reported.
  # rms(out_wav - decoded input).
  audio_input_weight: float = field(0.0, recorded_before=0.0)
  # rms(out_wav - target waveform): the dataset's audio (precompute.encode
  # --keep-audio), else the decoded target (the run log says which).
  audio_target_weight: float = field(0.0, recorded_before=0.0)
  # Multi-resolution STFT loss ("weight_spectral").
  stft_weight: float = field(0.0, recorded_before=0.0)
  mel_weight: float = field(0.0, recorded_before=0.0)  # log-mel distance.
  # Squared envelope correlations.
  correlation_weight: float = field(0.0, recorded_before=0.0)
  # The published code always adds 0.01 x this penalty; the seed report
  # does not name it, so whether the seed run's code had it is not known.
  spectral_outlier_weight: float = field(0.01, recorded_before=0.0)

  @property
  def audio_weights(self) -> dict[str, float]:
    """{audio term: its weight}, in the order logged (audio_losses)."""
    return {'audio_input': self.audio_input_weight,
            'audio_target': self.audio_target_weight,
            'stft': self.stft_weight, 'mel': self.mel_weight,
            'correlation': self.correlation_weight,
            'spectral_outlier': self.spectral_outlier_weight}

  @property
  def uses_audio(self) -> bool:
    """Whether any audio term has a weight (the decoder joins the step)."""
    return any(self.audio_weights.values())


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """The two AdamW optimisers (DESIGN.md 5)."""
  learning_rate: float = field(1e-4, minimum=0.0)  # generator AdamW.
  weight_decay: float = field(0.01, minimum=0.0)  # generator AdamW.
  grad_clip_norm: float = field(10.0, minimum=0.0)  # generator global norm.
  disc_learning_rate: float = field(5e-5, minimum=0.0)  # GAN discriminator.
  disc_weight_decay: float = field(0.01, minimum=0.0)  # GAN discriminator.
  # GAN discriminator AdamW beta1 (the original's); optax's default before.
  disc_b1: float = field(0.5, minimum=0.0, recorded_before=0.9)
  disc_b2: float = field(0.999, minimum=0.0, recorded_before=0.999)
  disc_grad_clip_norm: float = field(1.0, minimum=0.0)  # its gradient norm.
  # Decay of an exponential moving average of the generator's weights
  # (DESIGN.md 4.4a), which validation, sample, evaluate and arrange use; 0,
  # the seed's: none, the trained weights themselves.
  ema_decay: float = field(0.0, minimum=0.0, below=1.0, recorded_before=0.0,
                           changes_checkpoints=_comes_or_goes)
  # Both learning rates' schedule over the applied updates: 'constant' (the
  # seed's), or 'cosine': a linear warm-up from 0 over warmup_steps, then a
  # cosine decay to final_lr_fraction of each rate at the run's last step.
  lr_schedule: str = field('constant', choices=('constant', 'cosine'),
                           recorded_before='constant')
  warmup_steps: int = field(0, minimum=0, recorded_before=0)  # 'cosine'.
  # 'cosine': the rates at the last step, as a fraction of their peak.
  final_lr_fraction: float = field(0.0, minimum=0.0, recorded_before=0.0)


@dataclasses.dataclass(frozen=True)
class Config:
  """A run: its schedule, and the data, model, loss and optimiser parts."""
  # PRNG seed: initialisation, data order, dropout and noise.
  seed: int = field(42)
  # Pairs per device; 4 devices -> 64/step.
  per_device_batch_size: int = field(16, minimum=1)
  # Frames per clip: 16 s at 75 EnCodec frames/s.
  num_frames: int = field(1200, minimum=1)

  # JAX's persistent compilation cache: a repeated or resumed run loads its
  # compiled steps. auto: $JAX_COMPILATION_CACHE_DIR, else
  # $XDG_CACHE_HOME/jingle_jax/jax (~/.cache/...); a folder; '' for none.
  compilation_cache: str = field('auto', recorded_before='auto')

  # Training loop. Steps count batches, skipped updates included.
  workdir: str = field('')  # checkpoints, logs, config.json; --workdir wins.
  # Length of training when num_train_steps is -1.
  num_epochs: int = field(200, minimum=1)
  # -1: num_epochs epochs of full batches.
  num_train_steps: int = field(-1, minimum=1, per_epoch=True)
  # Train metrics averaged over this many steps.
  log_every_steps: int = field(10, minimum=1)
  # Validation interval; -1: every epoch.
  eval_every_steps: int = field(-1, minimum=1, per_epoch=True)
  # -1: every checkpoint_every_epochs.
  checkpoint_every_steps: int = field(-1, minimum=1, per_epoch=True)
  # Used when checkpoint_every_steps is -1.
  checkpoint_every_epochs: int = field(10, minimum=1)
  # Newest checkpoints kept, plus the best one.
  keep_checkpoints: int = field(3, minimum=1)
  # Validations with no lower validation loss before stopping; 0: off.
  early_stopping_patience: int = field(20, minimum=0)
  # Non-finite steps in a row before training stops with an error.
  max_consecutive_skips: int = field(10, minimum=1)
  # TensorBoard's pictures and audio: the masks of the first validation
  # pairs and, when the dataset has decoder weights, their input, target and
  # output decoded, at every media_every_evals-th validation.
  media_pairs: int = field(2, minimum=0, recorded_before=0)  # 0: none.
  # Validations between them.
  media_every_evals: int = field(5, minimum=1, recorded_before=1)

  data: DataConfig = part(DataConfig)
  model: ModelConfig = part(ModelConfig)
  loss: LossConfig = part(LossConfig)
  optim: OptimConfig = part(OptimConfig)


def default_config() -> ml_collections.ConfigDict:
  """The seed recipe (DESIGN.md 5), for configs/*.py to change."""
  return ml_collections.ConfigDict(dataclasses.asdict(Config()))


def _nest_data_fields(values: dict) -> dict:
  """`values` with the data fields of older records moved to 'data'."""
  flat = {old: new for old, new in _FLAT_DATA_FIELDS.items() if old in values}
  if not flat:
    return values
  values = dict(values)
  data = dict(values.get('data', {}))
  for old, new in flat.items():
    data[new] = values.pop(old)
  return dict(values, data=data)


def parse(values) -> Config:
  """The checked Config of an ml_collections config or a dict (recorded
  ones included); ConfigError names the first field at fault."""
  if isinstance(values, ml_collections.ConfigDict):
    values = values.to_dict()
  config = build(Config, _nest_data_fields(values))
  model = config.model
  if model.use_creative_agent and model.fixed_masking != 'none':
    raise ConfigError('config.model.fixed_masking needs '
                      'config.model.use_creative_agent=False')
  if config.num_frames > model.max_len:
    raise ConfigError(f'config.num_frames ({config.num_frames}) exceeds '
                      f'config.model.max_len ({model.max_len})')
  return config


def for_training(values, workdir) -> Config:
  """parse(values), with what a training run needs besides."""
  config = parse(values)
  if not config.data.dir:
    raise ConfigError('config.data.dir is empty: set it to the output of '
                      'precompute.encode (--config.data.dir=DIR)')
  if not workdir:
    raise ConfigError('no workdir: pass --workdir or set config.workdir')
  return config
