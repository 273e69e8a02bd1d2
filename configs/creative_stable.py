"""The seed recipe with its GAN kept in check (DESIGN.md 4.4a).

Measured on the demo (docs/BENCHMARKS.md, "GAN stability"): with the seed's
discriminator learning rate the discriminator's loss fell towards 0, the
adversarial term and the gradient norm grew, and validation
complementarity fell 10 points after its best; neither an R1 penalty
(gamma 10) nor a moving average alone stopped that. A discriminator five
times slower held it, and the moving average keeps what the run learns.
The balance term taken per pair kept the masks of songs not trained on
near 0.5 in five of six runs ("the balance taken per pair"), and a
cosine decay of the rates held the sixth, whose discriminator gained late
at a constant rate. Not yet measured at these shapes.
"""

from configs import creative


def get_config():
  config = creative.get_config()
  # Two time-scales: the seed's 5e-5 lets D overpower the generator.
  config.optim.disc_learning_rate = 1e-5
  # Validation and inference run a moving average of the weights over about
  # 1,000 updates (the seed's epoch is 28 steps of 64 pairs).
  config.optim.ema_decay = 0.999
  # Balance each pair's masks, not only the batch's means: songs not
  # trained on then lean less (within 0.016 of 0.5 in five of six runs).
  config.loss.balance_per_pair = True
  # Rates that warm up and then decay to 0 at the run's end: at a constant
  # rate a discriminator can still gain late in a long run and pull the
  # masks apart (real music, seed 2: 0.023 from 0.5 at step 600, 0.012
  # with the decay).
  config.optim.lr_schedule = 'cosine'
  config.optim.warmup_steps = 20
  return config
