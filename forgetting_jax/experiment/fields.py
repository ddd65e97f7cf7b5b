"""How a config field is declared: its default and its rules (allowed values, bounds, checks),
kept in the dataclass field's metadata and enforced by parse.py."""

import dataclasses
import types
import typing
from typing import Any, Callable

from forgetting_jax.experiment.choices import (DUPLICATES, PREDICT_METHODS, SUITE_TASKS, parse_rep_dot_encoder,
                                               parse_strategy)


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
           choices: tuple | None = None, at_least: float | None = None, above: float | None = None,
           at_most: float | None = None, below: float | None = None,
           check: Callable[[Any], str | None] | None = None, placeholders: dict | None = None) -> Any:
    """A dataclass field with its validation rules in the metadata (checked by parse.py).

    choices: the allowed values (of each item, for a tuple field); at_least / at_most: inclusive
    bounds, above / below: exclusive ones; check: value -> what is wrong with it, or None;
    placeholders: {key: type} of a dict field's keys that are unset (None) by default.
    """
    rules = {k: v for k, v in dict(choices=choices, at_least=at_least, above=above, at_most=at_most,
                                   below=below, check=check, placeholders=placeholders).items() if v is not None}
    return dataclasses.field(default=default, default_factory=factory, metadata=rules)


def dimension(default: int) -> Any:
    """A model dimension: a positive int."""
    return setting(default, at_least=1)


def like(cls: type, name: str, default: Any) -> Any:
    """Field `name` of `cls` (its rules) with another default."""
    return dataclasses.field(default=default, metadata=cls.__dataclass_fields__[name].metadata)


def fill_or_positive(value: int) -> str | None:
    return None if value == -1 or value >= 1 else "must be -1 or at least 1"


def upstream_kwargs_problem(value: dict) -> str | None:
    duplicates = value.get("duplicates")
    if duplicates is not None and duplicates not in DUPLICATES:
        return f"has duplicates={duplicates!r}, not one of {', '.join(DUPLICATES)}"
    return None


def demo_tasks_problem(value: tuple) -> str | None:
    unknown = [name for name in value if name not in SUITE_TASKS]
    return f"has unknown demo task(s) {', '.join(unknown)}; tasks: {', '.join(SUITE_TASKS)}" if unknown else None


def strategies_problem(value: tuple) -> str | None:
    for name in value:
        try:
            parse_strategy(name)
        except ValueError as err:
            return f"has {name!r}: {err}"
    return None


def predict_methods_problem(value: tuple) -> str | None:
    unknown = [name for name in value if name not in PREDICT_METHODS]
    return f"has unknown method(s) {', '.join(unknown)}; known: {', '.join(PREDICT_METHODS)}" if unknown else None


def rep_dot_encoder_problem(value: str) -> str | None:
    try:
        parse_rep_dot_encoder(value)
    except ValueError as err:
        return str(err)
    return None


def optional_type(tp: Any) -> tuple[Any, bool]:
    """(T, True) for Optional[T] / T | None, else (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False
