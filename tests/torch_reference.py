"""A PyTorch reference of the Jingle_D model, for parity tests and timing.

Written from DESIGN.md sections 4 and 5 in the original's layout ([B, D, T]),
with the state-dict keys and shapes of DESIGN.md section 7 and PyTorch's
default initialisation. The parity tests use evaluation and training-mode
forwards without anti-cheating noise (so the spectral-norm power iteration can
be compared too), and whole training steps without dropout;
benchmarks/torch_step.py times its training step.
"""

import math

import torch
from torch import nn

import torch_audio_reference


def example_rms(x):
  """RMS per example over (D, T), 1e-8 inside the sqrt: [B, 1, 1]."""
  return torch.sqrt(x.square().mean(dim=(1, 2), keepdim=True) + 1e-8)


class PositionalEncoding(nn.Module):

  def __init__(self, width, dropout, max_len):
    super().__init__()
    position = torch.arange(max_len).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, width, 2) * (-math.log(10000.0) / width))
    pe = torch.zeros(1, max_len, width)
    pe[0, :, 0::2] = torch.sin(position * frequency)
    pe[0, :, 1::2] = torch.cos(position * frequency)
    self.register_buffer('pe', pe)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):  # [B, T, d]
    return self.dropout(x + self.pe[:, :x.shape[1]])


class CascadeStage(nn.Module):
  """Positions -> LayerNorm -> post-norm encoder -> LayerNorm -> SN Linear."""

  def __init__(self, width, latent_dim, num_layers, num_heads, dropout,
               max_len):
    super().__init__()
    self.pos_encoding = PositionalEncoding(width, dropout, max_len)
    self.input_norm = nn.LayerNorm(width)
    layer = nn.TransformerEncoderLayer(
        width, num_heads, 4 * width, dropout, activation='gelu',
        batch_first=True)
    self.transformer = nn.TransformerEncoder(layer, num_layers,
                                             enable_nested_tensor=False)
    self.post_norm = nn.LayerNorm(width)
    self.output_proj = nn.utils.spectral_norm(nn.Linear(width, latent_dim))

  def forward(self, x):  # [B, T, d] -> [B, T, D]
    x = self.transformer(self.input_norm(self.pos_encoding(x)))
    return self.output_proj(self.post_norm(x))


class AttentionMaskGenerator(nn.Module):

  def __init__(self, latent_dim, hidden_dim, num_heads, dropout):
    super().__init__()

    def analyzer():
      return nn.Sequential(
          nn.Conv1d(latent_dim, hidden_dim, 3, padding=1), nn.ReLU(),
          nn.Conv1d(hidden_dim, hidden_dim, 3, padding=1), nn.ReLU())

    def mask_head():
      return nn.Sequential(
          nn.Conv1d(hidden_dim, hidden_dim // 2, 3, padding=1), nn.ReLU(),
          nn.Conv1d(hidden_dim // 2, latent_dim, 1), nn.Sigmoid())

    self.input_analyzer = analyzer()
    self.target_analyzer = analyzer()
    self.cross_attention = nn.MultiheadAttention(
        hidden_dim, num_heads, dropout=dropout, batch_first=True)
    self.input_mask_generator = mask_head()
    self.target_mask_generator = mask_head()

  def forward(self, inputs, targets):  # [B, D, T] -> two masks [B, D, T]
    input_features = self.input_analyzer(inputs).transpose(1, 2)
    target_features = self.target_analyzer(targets).transpose(1, 2)
    input_attended, _ = self.cross_attention(
        input_features, target_features, target_features)
    target_attended, _ = self.cross_attention(
        target_features, input_features, input_features)
    return (self.input_mask_generator(input_attended.transpose(1, 2)),
            self.target_mask_generator(target_attended.transpose(1, 2)))


def mask_regularisers(input_mask, target_mask, weights):
  """(mask_reg, balance) of DESIGN.md 4.1; weights: (overlap, coverage, temporal)."""
  overlap = (input_mask * target_mask).mean()
  coverage = (input_mask + target_mask - 1).square().mean()
  temporal = sum(torch.relu(0.05 - mask.var(dim=2).mean())
                 for mask in (input_mask, target_mask))
  balance = (input_mask.mean() - 0.5)**2 + (target_mask.mean() - 0.5)**2
  overlap_weight, coverage_weight, temporal_weight = weights
  return (overlap_weight * overlap + coverage_weight * coverage +
          temporal_weight * temporal), balance


class StyleDiscriminator(nn.Module):

  def __init__(self, latent_dim):
    super().__init__()
    self.encoder = nn.Sequential(
        nn.Conv1d(latent_dim, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv1d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv1d(128, 256, 4, 2, 1), nn.LeakyReLU(0.2))
    self.classifier = nn.Sequential(
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(256, 1), nn.Sigmoid())
    self.style_matcher = nn.Linear(512, 1)

  def forward(self, pattern):  # [B, D, T] -> (real_fake [B], style [B])
    features = self.encoder(pattern)
    statistics = torch.cat([features.mean(dim=2), features.std(dim=2)], dim=1)
    return (self.classifier(features)[:, 0],
            torch.sigmoid(self.style_matcher(statistics))[:, 0])


class CreativeAgent(nn.Module):

  def __init__(self, latent_dim, hidden_dim, num_heads, dropout):
    super().__init__()
    self.mask_generator = AttentionMaskGenerator(latent_dim, hidden_dim,
                                                 num_heads, dropout)
    self.discriminator = StyleDiscriminator(latent_dim)

  def forward(self, inputs, targets):
    input_mask, target_mask = self.mask_generator(inputs, targets)
    masked_input = inputs * input_mask
    masked_target = targets * target_mask
    masked_input = masked_input * example_rms(inputs) / example_rms(
        masked_input)
    masked_target = masked_target * example_rms(targets) / example_rms(
        masked_target)
    return masked_input, masked_target, input_mask, target_mask


class CascadeTransformer(nn.Module):
  """The generator: creative agent (optional) and S cascade stages."""

  def __init__(self, latent_dim=128, num_stages=2, num_layers=6, num_heads=8,
               dropout=0.1, use_creative_agent=True, mask_hidden=256,
               mask_heads=4, max_len=2000, anti_cheating=0.0,
               mask_reg_weights=(1.0, 0.5, 5.0)):
    super().__init__()
    self.anti_cheating = anti_cheating
    self.mask_reg_weights = mask_reg_weights
    if use_creative_agent:
      self.creative_agent = CreativeAgent(latent_dim, mask_hidden, mask_heads,
                                          dropout)
    self.cascade_stages = nn.ModuleList(
        CascadeStage((2 if stage == 0 else 3) * latent_dim, latent_dim,
                     num_layers, num_heads, dropout, max_len)
        for stage in range(num_stages))

  def forward(self, inputs, targets):
    """inputs, targets [B, D, T] -> dict of output, masks, mask_reg, balance."""
    if hasattr(self, 'creative_agent'):
      x, y, input_mask, target_mask = self.creative_agent(inputs, targets)
      mask_reg, balance = mask_regularisers(input_mask, target_mask,
                                            self.mask_reg_weights)
    else:
      x, y = inputs, targets
      input_mask = target_mask = torch.ones_like(inputs)
      mask_reg = balance = torch.zeros(())
    previous, scales = None, []
    noisy_x = self.noisy(x)  # once; the target gets fresh noise per stage
    reference_rms = torch.sqrt((example_rms(x)**2 + example_rms(y)**2) / 2)
    for stage in self.cascade_stages:
      parts = [x, y] if previous is None else [x, previous, y]
      noisy_parts = ([noisy_x, y] if previous is None else
                     [noisy_x, previous, self.noisy(y)])
      stage_input = torch.cat(noisy_parts, dim=1).transpose(1, 2)
      out = stage(stage_input).transpose(1, 2) + sum(parts) / len(parts)
      scales.append((reference_rms / (example_rms(out) + 1e-8)).clamp(0.7,
                                                                       1.5))
      previous = out * scales[-1]  # the next stage sees the scaled output
    return {
        'output': previous,
        'rms_scale': torch.cat(scales, dim=1)[:, :, 0],  # [B, S]
        'input_mask': input_mask,
        'target_mask': target_mask,
        'mask_reg': mask_reg,
        'balance': balance,
    }

  def noisy(self, x):
    """Training only: x + N(0, 1) * anti_cheating * std(x)."""
    if not self.training or self.anti_cheating == 0.0:
      return x
    return x + torch.randn_like(x) * self.anti_cheating * x.std()


class LatentDiscriminator(nn.Module):
  """The GAN discriminator of DESIGN.md 4.4: latents [B, D, T] -> logits [B]."""

  def __init__(self, latent_dim=128, dropout=0.3):
    super().__init__()
    layers, channels = [], latent_dim
    for features, kernel, stride in ((256, 3, 2), (512, 5, 2), (512, 7, 2),
                                     (256, 9, 1)):
      layers += [nn.Conv1d(channels, features, kernel, stride, kernel // 2),
                 nn.LeakyReLU(0.2), nn.Dropout(dropout)]
      channels = features
    self.conv_layers = nn.Sequential(*layers)
    self.classifier = nn.Sequential(
        nn.Linear(256, 128), nn.LeakyReLU(0.2), nn.Dropout(dropout),
        nn.Linear(128, 1))

  def forward(self, latents):
    return self.classifier(self.conv_layers(latents).mean(dim=2))[:, 0]


def save_checkpoint(path, model, *, epoch, best_val_loss, discriminator=None,
                    optimizer=None, disc_optimizer=None, distributed=False):
  """torch.save's the dict the original training script writes.

  `epoch` is 0-based: that of the last epoch trained. Without `optimizer`, a
  fresh AdamW's state is written. `distributed` prefixes the keys with
  `module.` as a DistributedDataParallel wrapper does.
  """

  def state_dict(module):
    prefix = 'module.' if distributed else ''
    return {prefix + key: value for key, value in module.state_dict().items()}

  optimizer = optimizer or torch.optim.AdamW(model.parameters())
  checkpoint = {
      'epoch': epoch,
      'model_state_dict': state_dict(model),
      'optimizer_state_dict': optimizer.state_dict(),
      'best_val_loss': best_val_loss,
  }
  if discriminator is not None:
    checkpoint['discriminator_state_dict'] = state_dict(discriminator)
  if disc_optimizer is not None:
    checkpoint['disc_optimizer_state_dict'] = disc_optimizer.state_dict()
  torch.save(checkpoint, path)


def perturb_(module, seed, scale=0.05):
  """Adds seeded noise to every parameter, so that no weight keeps its
  structured default (LayerNorm ones, zero biases) and a swapped or
  mistransposed mapping shows in the outputs."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in module.parameters():
      parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
  return module


def training_step(model, discriminator, optimizer, disc_optimizer, inputs,
                  targets, config, decode=None):
  """One step of the original's loop with the config's loss weights and
  clipping (DESIGN.md 4.5): discriminator update on (rolled targets, detached
  output), then the generator update with the adversarial loss, and the
  audio terms of latents decode()d to audio [B, samples] when given."""
  weights, optim = config.loss, config.optim
  bce = nn.functional.binary_cross_entropy_with_logits
  out = model(inputs, targets)
  output = out['output']
  real_logits = discriminator(torch.roll(targets, 1, 0))
  fake_logits = discriminator(output.detach())
  d_loss = (bce(real_logits, torch.ones_like(real_logits)) +
            bce(fake_logits, torch.zeros_like(fake_logits)))
  disc_optimizer.zero_grad()
  d_loss.backward()
  nn.utils.clip_grad_norm_(discriminator.parameters(),
                           optim.disc_grad_clip_norm)
  disc_optimizer.step()
  adversarial_logits = discriminator(output)
  rms = lambda error: error.square().mean().sqrt()
  loss = (weights.input_weight * rms(output - inputs) +
          weights.target_weight * rms(output - targets) +
          weights.mask_reg_weight * out['mask_reg'] +
          weights.balance_weight * out['balance'] +
          weights.gan_weight * bce(adversarial_logits,
                                   torch.ones_like(adversarial_logits)))
  if decode is not None:
    loss = loss + torch_audio_reference.weighted_terms(
        decode, output, inputs, targets, weights)
  optimizer.zero_grad()
  loss.backward()
  nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip_norm)
  optimizer.step()


def numpy_checkpoint(model, **extra):
  """An original checkpoint of the model's weights, as numpy arrays."""
  return {'model_state_dict': {key: value.numpy() for key, value in
                               model.state_dict().items()}, **extra}


def from_config(config):
  """(model, discriminator, optimizer, disc_optimizer) of a jingle_jax config,
  in training mode, with PyTorch's default initialisation."""
  m, optim, weights = config.model, config.optim, config.loss
  model = CascadeTransformer(
      m.latent_dim, m.num_stages, m.num_layers, m.num_heads, m.dropout,
      m.use_creative_agent, m.mask_hidden, m.mask_heads, m.max_len,
      m.anti_cheating, (weights.overlap_weight, weights.coverage_weight,
                        weights.temporal_weight)).train()
  discriminator = LatentDiscriminator(m.latent_dim, m.disc_dropout).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=optim.learning_rate,
                                weight_decay=optim.weight_decay)
  disc_optimizer = torch.optim.AdamW(
      discriminator.parameters(), lr=optim.disc_learning_rate,
      betas=(optim.disc_b1, optim.disc_b2),
      weight_decay=optim.disc_weight_decay)
  return model, discriminator, optimizer, disc_optimizer
