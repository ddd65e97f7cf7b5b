"""Experiment configs as ml_collections ConfigDicts (what configs/*.py and the command line work
on), built from the section dataclasses so that every default is defined once; comma lists on
the command line."""

import dataclasses
import typing
from typing import Any

from ml_collections import ConfigDict, FieldReference

from forgetting_jax.experiment.fields import optional_type
from forgetting_jax.experiment.sections import Experiment, TrainSettings

def section_config(settings: Any) -> ConfigDict:
    """A section dataclass as a ConfigDict: nested sections as ConfigDicts, Optional fields typed
    (a placeholder when None, so that `--config.model.hf_dir=DIR` is a str), dicts as ConfigDicts
    (their unset keys typed by the field's `placeholders`)."""
    hints = typing.get_type_hints(type(settings))
    out = ConfigDict()
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        tp, optional = optional_type(hints[f.name])
        if dataclasses.is_dataclass(value):
            out[f.name] = section_config(value)
        elif optional:
            out[f.name] = FieldReference(value, field_type=tp)
        elif isinstance(value, dict):
            typed = f.metadata.get("placeholders", {})
            out[f.name] = ConfigDict({k: FieldReference(v, field_type=typed[k]) if k in typed and v is None else v
                                      for k, v in value.items()})
        else:
            out[f.name] = value
    return out


def to_config_dict(experiment: Experiment) -> ConfigDict:
    """An Experiment as the ConfigDict configs/*.py and the command line work on."""
    return section_config(experiment)


def default_config() -> ConfigDict:
    """The defaults of every field (the paper's recipe) as a ConfigDict: configs/*.py start here."""
    return to_config_dict(Experiment())


def config_beside(this_file: str, name: str) -> ConfigDict:
    """get_config() of the config file `name` in the directory of `this_file` (a config built on a
    neighbour's, whatever the working directory: `config_beside(__file__, "demo.py")`)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(this_file)), name)
    spec = importlib.util.spec_from_file_location(os.path.splitext(name)[0] + "_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def train_defaults() -> ConfigDict:
    """The train section's defaults as a ConfigDict (the fields `train` and `pretrain` share)."""
    return section_config(TrainSettings())


# Comma lists on the command line ---------------------------------------------------------------

def _split_items(items) -> list:
    out = []
    for item in items:
        if isinstance(item, str):
            out += [part.strip() for part in item.split(",") if part.strip()]
        else:
            out.append(item)
    return out


def split_comma_lists(config: ConfigDict, fields=None) -> ConfigDict:
    """Reads comma lists in the list and tuple fields of `config`, in place; returns `config`.

    ml_collections reads `--config.data.tasks=a,b,c` as the one-item tuple ("a,b,c",) (it
    evaluates the value as a Python literal when it can, else wraps it); this splits every string
    item on commas, strips blanks and drops empty items, so that override is ("a", "b", "c") and
    `--config.data.tasks=` is (). The field keeps its type (tuple or list). `fields`: the dotted
    names to split (e.g. "data.tasks"; those given on the command line); None: every list or
    tuple field, nested sections included. Names of other fields are ignored.
    """
    if fields is None:
        fields = _list_fields(config)
    for name in fields:
        *sections, key = name.split(".")
        parent = config
        for section in sections:
            parent = parent.get(section) if isinstance(parent, ConfigDict) else None
        if not isinstance(parent, ConfigDict) or key not in parent:
            continue
        value = parent[key]
        if isinstance(value, (tuple, list)):
            parent[key] = type(value)(_split_items(value))
    return config


def _list_fields(config: ConfigDict, prefix: str = "") -> list[str]:
    names = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ConfigDict):
            names += _list_fields(value, f"{prefix}{key}.")
        elif isinstance(value, (tuple, list)):
            names.append(prefix + key)
    return names
