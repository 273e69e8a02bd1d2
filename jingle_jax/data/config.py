"""The data's part of the config (`config.data`): where the latents are and
how pairs are cut from them and fed."""

import dataclasses

from jingle_jax.config.fields import field


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Pairs of consecutive clips cut from the cached song latents."""
  dir: str = field('')  # precompute.encode's output (manifest.json).
  # False feeds raw latents, as the original saw them (RMS ~5.7 with the
  # pretrained EnCodec); True standardises them per channel with the
  # manifest's training statistics. Runs recorded without it had True.
  normalise_latents: bool = field(False, changes_checkpoints=True,
                                  recorded_before=True)
  # Frames between pair starts; 0: config.num_frames (disjoint).
  window_hop: int = field(0, minimum=0)
  # Training inputs get random training targets.
  shuffle_targets: bool = field(True)
  # Batches put on the devices ahead of the step.
  prefetch_batches: int = field(2, minimum=1)
