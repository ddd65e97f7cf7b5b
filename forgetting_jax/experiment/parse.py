"""Parsing and validating an experiment config once: a ConfigDict -> an Experiment, or a
ConfigError naming the field, its value and what is allowed. Also settings derived from an
experiment's fields."""

import dataclasses
import difflib
import typing
from typing import Any, Mapping

from ml_collections import ConfigDict

from forgetting_jax.experiment.choices import ConfigError
from forgetting_jax.experiment.fields import optional_type
from forgetting_jax.experiment.sections import Experiment

_TYPE_NAMES = {int: "an int", float: "a number", bool: "a bool (True or False)", str: "a string",
               dict: "a section of options"}


def _type_name(tp: Any, optional: bool) -> str:
    if typing.get_origin(tp) is tuple:
        name = "a list of strings"
    elif dataclasses.is_dataclass(tp):
        name = "a section"
    else:
        name = _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    return name + (" or None" if optional else "")


def _convert(path: str, value: Any, hint: Any) -> Any:
    tp, optional = optional_type(hint)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, (ConfigDict, Mapping)):
            return _parse_section(tp, value, path)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is tuple:
        if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif tp is dict:
        if isinstance(value, ConfigDict):
            return value.to_dict()
        if isinstance(value, Mapping):
            return dict(value)
    raise ConfigError(f"config field {path}={value!r} is not {_type_name(tp, optional)}")


def field_kind(path: str) -> str | None:
    """What dotted field `path` holds, e.g. "an int" for "train.steps" (None: no such field)."""
    cls, hint = Experiment, None
    for name in path.split("."):
        if cls is None or name not in cls.__dataclass_fields__:
            return None
        hint = typing.get_type_hints(cls)[name]
        tp = optional_type(hint)[0]
        cls = tp if dataclasses.is_dataclass(tp) else None
    return _type_name(*optional_type(hint))


def _number(x: float) -> str:
    return f"{x:g}"


def _check(path: str, value: Any, rules: Mapping) -> None:
    """Raises a ConfigError naming `path` when `value` breaks one of the field's `rules`."""
    if value is None:
        return
    choices = rules.get("choices")
    if choices is not None:
        allowed = ", ".join(repr(c) if c == "" else str(c) for c in choices)
        items = value if isinstance(value, tuple) else (value,)
        bad = [v for v in items if v not in choices]
        if bad and isinstance(value, tuple):
            raise ConfigError(f"config field {path}={value!r} has {bad[0]!r}, not one of {allowed}")
        if bad:
            raise ConfigError(f"config field {path}={value!r} is not one of {allowed}")
    bounds = (("at_least", lambda v, b: v >= b, "at least"), ("above", lambda v, b: v > b, "above"),
              ("at_most", lambda v, b: v <= b, "at most"), ("below", lambda v, b: v < b, "below"))
    for key, holds, words in bounds:
        bound = rules.get(key)
        if bound is not None and not holds(value, bound):
            raise ConfigError(f"config field {path}={value!r} must be {words} {_number(bound)}")
    check = rules.get("check")
    problem = check(value) if check is not None else None
    if problem:
        raise ConfigError(f"config field {path}={value!r} {problem}")


def _parse_section(cls: type, config: Any, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = path + "." if path else ""
    for key in config.keys():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"{path or 'the config'} has {', '.join(fields)}"
            raise ConfigError(f"config field {prefix}{key} is unknown ({hint})")
    kwargs = {}
    for name, f in fields.items():
        if name not in config:
            continue  # the default
        value = _convert(prefix + name, config[name], hints[name])
        _check(prefix + name, value, f.metadata)
        kwargs[name] = value
    return cls(**kwargs)


def _check_experiment(experiment: Experiment) -> None:
    """Rules across fields."""
    mesh = experiment.mesh
    filled = [axis for axis in ("data", "fsdp", "tensor") if getattr(mesh, axis) == -1]
    if len(filled) > 1:
        raise ConfigError(f"config fields {', '.join('mesh.' + a for a in filled)} are all -1 (one axis at most "
                          "fills the devices the others leave)")


def parse(config: Any) -> Experiment:
    """The Experiment of a ConfigDict (configs/*.py with overrides), converted and validated once.

    Missing fields take their defaults. Raises ConfigError naming the dotted field, its value and
    what is allowed: a value of the wrong type (an int is a number, a str is not an int), a value
    outside the field's choices or range, a field or section the schema does not have.
    """
    if not isinstance(config, (ConfigDict, Mapping)):
        raise ConfigError(f"the config is a {type(config).__name__}, not a ConfigDict")
    experiment = _parse_section(Experiment, config, "")
    _check_experiment(experiment)
    return experiment


def as_experiment(config: Any) -> Experiment:
    """`config` as an Experiment: itself, or a ConfigDict parsed (library entry points take either)."""
    return config if isinstance(config, Experiment) else parse(config)
