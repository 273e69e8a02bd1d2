"""Seed training recipe of the creative agent (SPEC section 5).

The seed run's objective has no reconstruction term (w_in = w_tgt = 0): the
cascade learns from the adversarial term alone, the mask generator from it,
the mask regularisers and the balance term. It sees raw EnCodec latents, as
the original did.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 42  # PRNG seed: initialisation, data order, dropout and noise.
  config.per_device_batch_size = 16  # pairs per device; 4 devices -> 64/step.
  config.num_frames = 1200  # frames per clip: 16 s at 75 EnCodec frames/s.

  # Data: pairs of consecutive clips cut from the cached song latents.
  config.data_dir = ''  # precompute.encode's output (holds manifest.json).
  # False feeds raw latents, as the original saw them (RMS ~5.7 with the
  # pretrained EnCodec); True standardises them per channel with the
  # manifest's training statistics.
  config.normalise_latents = False
  config.window_hop = 0  # frames between pair starts; 0: num_frames (disjoint).
  config.shuffle_targets = True  # training inputs get random training targets.
  config.prefetch_batches = 2  # batches put on the devices ahead of the step.
  # JAX's persistent compilation cache: a repeated or resumed run loads its
  # compiled steps. auto: $JAX_COMPILATION_CACHE_DIR, else
  # $XDG_CACHE_HOME/jingle_jax/jax (~/.cache/...); a folder; '' for none.
  config.compilation_cache = 'auto'

  # Training loop. Steps count batches, skipped updates included.
  config.workdir = ''  # checkpoints, logs, config.json; --workdir overrides.
  config.num_epochs = 200  # length of training when num_train_steps is -1.
  config.num_train_steps = -1  # -1: num_epochs epochs of full batches.
  config.log_every_steps = 10  # train metrics averaged over this many steps.
  config.eval_every_steps = -1  # validation interval; -1: every epoch.
  config.checkpoint_every_steps = -1  # -1: every checkpoint_every_epochs.
  config.checkpoint_every_epochs = 10  # used when checkpoint_every_steps is -1.
  config.keep_checkpoints = 3  # newest checkpoints kept, plus the best one.
  config.early_stopping_patience = 20  # evals with no lower val loss; 0: off.
  config.max_consecutive_skips = 10  # non-finite steps in a row -> error.
  # TensorBoard's pictures and audio: the masks of the first validation
  # pairs and, when the dataset has decoder weights, their input, target and
  # output decoded, at every media_every_evals-th validation.
  config.media_pairs = 2  # validation pairs shown; 0: none.
  config.media_every_evals = 5  # validations between them.

  config.model = model = ml_collections.ConfigDict()
  model.num_stages = 3  # cascade stages (stage 0 d=2D, later stages d=3D).
  model.num_layers = 6  # transformer encoder layers per stage.
  model.num_heads = 8  # attention heads in the cascade.
  model.latent_dim = 128  # EnCodec latent channels D.
  model.dropout = 0.1  # dropout after positions, attention and feed-forward.
  model.attention_dropout = 0.1  # dropout on attention weights (training).
  model.anti_cheating = 0.9  # training noise scale a, in units of std(x).
  model.use_creative_agent = True  # learned masks; False: fixed_masking.
  # Agent off: none or temporal|frequency|spectral|energy|hybrid masks.
  model.fixed_masking = 'none'
  model.hard_masks = False  # Gumbel straight-through binary masks.
  model.mask_hidden = 256  # hidden width H of the mask generator.
  model.mask_heads = 4  # heads of the mask generator's cross-attention.
  model.max_len = 2000  # frames covered by the sinusoidal position table.
  model.compute_dtype = 'auto'  # auto: float32 on CPU, bfloat16 on GPU/TPU.
  # Recomputed in the backward pass instead of stored: none, attention (the
  # attention weights: O(T) instead of O(T^2) memory per layer) or layers
  # (also all but each layer's matmul outputs).
  model.remat = 'layers'
  # Attention: xla (the weights materialised; cuDNN's fused attention where
  # nothing is dropped), fused (Pallas kernels: the weights, dropout
  # included, never leave the chip; interpreted, slowly, off GPU) or auto
  # (fused on GPU, xla elsewhere).
  model.attention_impl = 'auto'
  model.disc_dropout = 0.3  # dropout in the GAN latent discriminator.

  config.loss = loss = ml_collections.ConfigDict()
  loss.input_weight = 0.0  # weight of rms(output - input); the seed's is 0.
  loss.target_weight = 0.0  # weight of rms(output - target): 0 = no copying.
  loss.mask_reg_weight = 0.1  # weight of the mask regulariser mask_reg.
  # mask_reg = overlap_weight x overlap + coverage_weight x coverage
  #   + temporal_weight x temporal (SPEC 4.1); the published code later
  #   raised overlap_weight to 10.
  loss.overlap_weight = 1.0  # weight of mean(m_in x m_tgt) in mask_reg.
  loss.coverage_weight = 0.5  # weight of mean((m_in + m_tgt - 1)^2).
  loss.temporal_weight = 5.0  # weight of the too-static-masks penalty.
  loss.balance_weight = 5.0  # weight of the 50/50 mask balance term.
  loss.gan_weight = 0.1  # weight of the adversarial loss; 0 disables the GAN.
  # Audio-domain terms (SPEC 4.5a) on the output decoded by EnCodec's frozen
  # decoder inside the step (the dataset needs decoder weights); a weight of
  # 0 keeps the decoder out of the compiled step. The seed run had no
  # reconstruction, STFT or mel term; its correlation weight is not reported.
  loss.audio_input_weight = 0.0  # rms(out_wav - decoded input).
  # rms(out_wav - target waveform): the dataset's audio (precompute.encode
  # --keep-audio), else the decoded target (the run log says which).
  loss.audio_target_weight = 0.0
  loss.stft_weight = 0.0  # multi-resolution STFT loss ("weight_spectral").
  loss.mel_weight = 0.0  # log-mel distance.
  loss.correlation_weight = 0.0  # squared envelope correlations.
  # The published code always adds 0.01 x this penalty; the seed report
  # does not name it, so whether the seed run's code had it is not known.
  loss.spectral_outlier_weight = 0.01

  config.optim = optim = ml_collections.ConfigDict()
  optim.learning_rate = 1e-4  # generator AdamW learning rate.
  optim.weight_decay = 0.01  # generator AdamW weight decay.
  optim.grad_clip_norm = 10.0  # generator global gradient-norm clip.
  optim.disc_learning_rate = 5e-5  # GAN discriminator AdamW learning rate.
  optim.disc_weight_decay = 0.01  # GAN discriminator AdamW weight decay.
  optim.disc_b1 = 0.5  # GAN discriminator AdamW beta1 (the original's).
  optim.disc_b2 = 0.999  # GAN discriminator AdamW beta2.
  optim.disc_grad_clip_norm = 1.0  # GAN discriminator gradient-norm clip.
  return config
