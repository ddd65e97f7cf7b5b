"""What the source readers share: file-name task labels, row ids, dotted fields, the read loop."""

import os
import re
from typing import Any, Callable, Sequence

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.rows import Row, read_rows
from forgetting_jax.data.validate import convert_rows, require_str

_MISSING = object()
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv", ".arrow")
SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval", "auxiliary_train")
# Shard file names of the hub's parquet exports: "0000", "test-00000-of-00001[-<hash>]".
_SHARD = re.compile(r"^(?:\d+|(?:[A-Za-z_]+-)?\d{5}-of-\d{5}(?:-[0-9a-f]+)?)$")


def stem(path: str) -> str:
    """The file name without compression and data suffixes: ".../00.jsonl.zst" -> "00"."""
    base = os.path.basename(path.rstrip("/"))
    for suffix in (".gz", ".zst"):
        base = base.removesuffix(suffix)
    for suffix in DATA_SUFFIXES:
        base = base.removesuffix(suffix)
    return base


def task_from_path(path: str, *, strip_split: bool = False) -> str:
    """The task a file is named after: its stem, or for a hub shard ("0000.parquet",
    "test-00000-of-00001.parquet") the folder above the shard and above a split folder
    ("{task}/test/0000.parquet" and "{task}/test-00000-of-00001.parquet" both give "{task}").

    strip_split: also drop a trailing "_{split}" ("boolean_expressions_train" -> "boolean_expressions").
    """
    name = stem(path)
    parent = os.path.dirname(os.path.abspath(path)) if os.path.exists(path) else os.path.dirname(path)
    while (_SHARD.match(name) or name in SPLIT_NAMES) and parent and os.path.basename(parent):
        name, parent = os.path.basename(parent), os.path.dirname(parent)
    if strip_split:
        match = re.match(r"^(.+)_(?:%s)$" % "|".join(SPLIT_NAMES), name)
        if match:
            name = match.group(1)
    return name


def place(row: Row) -> str:
    """The number in the row's place: the line (JSON lines, CSV), item or row."""
    return row.where.rsplit(" ", 1)[-1]


def get_field(values: dict, field: str) -> Any:
    """values[field], where a dotted field ("meta.pile_set_name") walks nested objects; a key
    that itself holds the dots wins. Returns the module's _MISSING when there is none."""
    if field in values:
        return values[field]
    current: Any = values
    for key in field.split("."):
        if not isinstance(current, dict) or key not in current:
            return _MISSING
        current = current[key]
    return current


def has_field(values: dict | None, field: str) -> bool:
    return values is not None and get_field(values, field) is not _MISSING


def field_str(values: dict, field: str, *, optional: bool = False, nonempty: bool = True) -> str | None:
    """`require_str` of a possibly dotted field (a missing or null field is None with optional)."""
    value = get_field(values, field)
    probe = {} if value is _MISSING else {field: value}
    return require_str(probe, field, optional=optional, nonempty=nonempty)


def first_field(values: dict, fields: Sequence[str]) -> str | None:
    """The first of `fields` the row has (not null), else None."""
    for field in fields:
        value = get_field(values, field)
        if value is not _MISSING and value is not None:
            return field
    return None


class NamedField:
    """Watches rows for a field the user named (`option`, e.g. source_field; None: nothing named):
    `check` raises a DataError when no row had it, rather than silently falling back."""

    def __init__(self, field: str | None, option: str):
        self.field, self.option = field, option
        self.found = False
        self.first: dict | None = None

    def see(self, values: dict) -> None:
        if self.field is None or self.found:
            return
        if self.first is None:
            self.first = values
        self.found = has_field(values, self.field)

    def check(self, path: str) -> None:
        if self.field is None or self.found:
            return
        seen = ", ".join(sorted(self.first)) if self.first else "none"
        raise DataError(f"{self.option}={self.field!r} names no field of any row (fields of the first "
                        f"row: {seen})", path=path, field=self.field)


def doc_id(row: Row) -> str | None:
    """The row's own id (a string, or an integer written in decimal), if it has one."""
    value = row.values.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return require_str(row.values, "id", optional=True)


def row_id(row: Row, task: str) -> str:
    """The row's own id, else "<task>:<ordinal>" (the ordinal counts skipped rows too)."""
    return doc_id(row) or f"{task}:{row.index}"


def chat(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def read(path: str, convert_row: Callable[[Row], list[dict]], *, skip_bad: bool, skipped_path: str | None,
         name: str | None, split: str, field: str | None = None) -> list[dict]:
    rows = read_rows(path, field=field, name=name, split=split)
    return convert_rows(rows, path, convert_row, skip_bad=skip_bad, skipped_path=skipped_path)
