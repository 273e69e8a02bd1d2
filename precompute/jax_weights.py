"""EnCodec's PyTorch weights as the parameters of the JAX encoder and decoder
(jingle_jax.models.encodec_encoder, encodec_decoder), weight norm folded;
the files written from them: a dataset's decoder weights, and the converted
weights with which precompute encodes without torch."""

import torch

from jingle_jax.inference import encodec_decoding
from jingle_jax.inference import encodec_encoding
from jingle_jax.models import encodec_decoder
from jingle_jax.models import encodec_encoder


def _folded(conv, transposed=False) -> dict:
  """A weight-normed torch conv as {kernel [k, in, out], bias}: g x v / |v|
  computed as torch computes it, once."""
  weight = torch._weight_norm(conv.weight_v, conv.weight_g, 0)  # pylint: disable=protected-access
  # Conv1d weights are [out, in, k]; ConvTranspose1d weights [in, out, k].
  order = (2, 0, 1) if transposed else (2, 1, 0)
  return {'kernel': weight.detach().cpu().permute(*order).numpy().copy(),
          'bias': conv.bias.detach().cpu().numpy().copy()}


def _lstm_layer(lstm, layer: int) -> dict:
  weights = {name: getattr(lstm, f'{name}_l{layer}').detach().cpu().numpy()
             for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')}
  return {'input_kernel': weights['weight_ih'].T.copy(),
          'recurrent_kernel': weights['weight_hh'].T.copy(),
          'bias': weights['bias_ih'] + weights['bias_hh']}


def _ends_and_lstm(layers, lstm) -> dict:
  """A SEANet's first and last convolutions and its LSTM's layers."""
  params = {'conv_in': _folded(layers[0].conv.conv),
            'conv_out': _folded(layers[-1].conv.conv)}
  for layer in range(lstm.num_layers):
    params[f'lstm_{layer}'] = _lstm_layer(lstm, layer)
  return params


def _residual_block(block) -> dict:
  return {'residual_conv': _folded(block.block[1].conv.conv),
          'residual_out': _folded(block.block[3].conv.conv),
          'shortcut': _folded(block.shortcut.conv.conv)}


def encoder_params(model) -> dict:
  """encodec_encoder.EncodecEncoder's parameters from an EnCodec 24 kHz
  model (SEANetEncoder layers: conv, 4 x [residual block, ELU, strided
  conv], LSTM, ELU, conv)."""
  layers = list(model.encoder.model)
  if len(layers) != 4 + 3 * len(encodec_encoder.STRIDES):
    raise ValueError(f'not EnCodec\'s 24 kHz encoder: {len(layers)} layers')
  params = _ends_and_lstm(layers, layers[-3].lstm)
  for index in range(len(encodec_encoder.STRIDES)):
    block, downsample = layers[1 + 3 * index], layers[3 + 3 * index]
    params[f'stage_{index}'] = {**_residual_block(block),
                                'downsample': _folded(downsample.conv.conv)}
  return params


def decoder_params(model) -> dict:
  """encodec_decoder.EncodecDecoder's parameters from an EnCodec 24 kHz
  model (SEANetDecoder layers: conv, LSTM, 4 x [ELU, transposed conv,
  residual block], ELU, conv)."""
  layers = list(model.decoder.model)
  if len(layers) != 4 + 3 * len(encodec_decoder.STRIDES):
    raise ValueError(f'not EnCodec\'s 24 kHz decoder: {len(layers)} layers')
  params = _ends_and_lstm(layers, layers[1].lstm)
  for index in range(len(encodec_decoder.STRIDES)):
    upsample, block = layers[3 + 3 * index], layers[4 + 3 * index]
    params[f'stage_{index}'] = {
        'upsample': _folded(upsample.convtr.convtr, transposed=True),
        **_residual_block(block)}
  return params

def export(out_dir, model, encodec_weights_identity: str) -> str:
  """Writes the decoder file of `model` into out_dir; returns its name."""
  with torch.no_grad():
    params = decoder_params(model)
  encodec_decoding.write(out_dir, params, encodec_weights_identity)
  return encodec_decoding.DECODER_FILE


def write_converted(path, model, encodec_weights_identity: str) -> None:
  """Writes `model`'s converted weights file (encodec_encoding) at `path`."""
  with torch.no_grad():
    encoder, decoder = encoder_params(model), decoder_params(model)
  encodec_encoding.write_weights(path, encodec_weights_identity, encoder,
                                 decoder)
