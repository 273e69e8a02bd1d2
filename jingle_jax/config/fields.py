"""Config fields declared once: a frozen dataclass per part of the config,
each field with its default, bounds, whether it changes what checkpoints
hold, and the value that runs recorded before it existed had.

`build` makes the typed config from a nested dict (an ml_collections config
or a recorded config.json), checking every field and naming it on error.
"""

import dataclasses
from typing import Any, Callable

_NEW = object()  # recorded_before of a field that every run has recorded


class ConfigError(ValueError):
  """A config that cannot run; the message names the field."""


def field(default, *, minimum=None, below=None, per_epoch=False, choices=None,
          changes_checkpoints: bool | Callable[[Any, Any], bool] = False,
          recorded_before=_NEW):
  """A config field.

  minimum: the smallest value allowed; below: a bound values stay under.
  per_epoch: -1 is allowed too (the value then follows the epochs).
  choices: the values allowed.
  changes_checkpoints: whether another value gives a workdir's checkpoints
  other shapes or another meaning, or a function (old, new) -> bool saying
  it. recorded_before: the value of runs recorded before the field existed.
  """
  return dataclasses.field(default=default, metadata=dict(
      minimum=minimum, below=below, per_epoch=per_epoch, choices=choices,
      changes_checkpoints=changes_checkpoints,
      recorded_before=recorded_before))


def part(cls):
  """A field holding a part of the config (e.g. model: ModelConfig)."""
  return dataclasses.field(default_factory=cls)


def _value(name, value, kind, meta):
  """`value` of field `name` as `kind`, checked against its bounds."""
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if type(value) is not kind:  # pylint: disable=unidiomatic-typecheck
    raise ConfigError(f'{name} must be {kind.__name__}, not {value!r}')
  if meta['choices'] is not None and value not in meta['choices']:
    raise ConfigError(f'{name} is {value!r}, not one of {meta["choices"]}')
  minimum = meta['minimum']
  if minimum is not None and value < minimum and not (
      meta['per_epoch'] and value == -1):
    allowed = '-1 or at least' if meta['per_epoch'] else 'at least'
    if minimum == 0:
      raise ConfigError(f'{name} must not be negative, not {value}')
    raise ConfigError(f'{name} must be {allowed} {minimum}, not {value}')
  if meta['below'] is not None and value >= meta['below']:
    raise ConfigError(f'{name} must be below {meta["below"]}, not {value}')
  return value


def build(cls, values, prefix='config.'):
  """A `cls` from the nested dict `values`; fields missing from it take
  their recorded_before value, unknown ones are refused."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ConfigError(f'{prefix}{unknown[0]} is not a config field')
  kwargs = {}
  for name, declared in fields.items():
    if dataclasses.is_dataclass(declared.type):
      kwargs[name] = build(declared.type, values.get(name, {}),
                           f'{prefix}{name}.')
      continue
    meta = declared.metadata
    if name in values:
      kwargs[name] = _value(prefix + name, values[name], declared.type, meta)
    elif meta['recorded_before'] is not _NEW:
      kwargs[name] = meta['recorded_before']
    else:
      raise ConfigError(f'{prefix}{name} is missing')
  return cls(**kwargs)


def flat(config, prefix='') -> dict[str, tuple[Any, dataclasses.Field]]:
  """{'model.num_layers': (6, its declaration), ...} of a typed config."""
  out = {}
  for declared in dataclasses.fields(config):
    value = getattr(config, declared.name)
    if dataclasses.is_dataclass(value):
      out.update(flat(value, f'{prefix}{declared.name}.'))
    else:
      out[prefix + declared.name] = value, declared
  return out
