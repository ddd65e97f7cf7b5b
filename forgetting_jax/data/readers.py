"""The scoring formats: `lm` ({"id", "text"}) and `chat` ({"id", "messages"}) records, validated.

An optional "source" (or "task", or the Pile's "meta.pile_set_name") string field is kept as the
record's "task" label. An lm record without an id (the Pile's lines) gets "<file stem>:<line>".
"""

import functools

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.rows import Row, read_rows
from forgetting_jax.data.sources_base import field_str, first_field, place, stem
from forgetting_jax.data.validate import convert_rows, require_messages, require_str

FORMATS = ("lm", "chat")


LABEL_FIELDS = ("source", "task", "meta.pile_set_name")


def _label(values: dict) -> str:
    field = first_field(values, LABEL_FIELDS)
    return field_str(values, field) if field else ""


def _lm_converter(path: str):
    file_stem = stem(path)

    def convert(row: Row) -> list[dict]:
        values = row.values
        record_id = require_str(values, "id") if "id" in values else f"{file_stem}:{place(row)}"
        return [{"id": record_id, "task": _label(values), "text": require_str(values, "text")}]

    return convert


def _chat_record(row: Row, prompts: bool = False) -> list[dict]:
    values = row.values
    return [{"id": require_str(values, "id"), "task": _label(values),
             "messages": require_messages(values, "messages", must_end_with_response=True, prompt_only=prompts)}]


def read_records(path: str, format: str, skip_bad: bool = False, *,
                 skipped_path: str | None = None, prompts: bool = False) -> list[dict]:
    """Reads and validates every record of `path` in the given format ('lm' or 'chat'), in order.

    lm:   {"id": non-empty str, unique (a line without "id" gets "<file stem>:<line>");
           "text": non-empty, non-whitespace str}
    chat: {"id": ...; "messages": non-empty list of {"role": str, "content": str} ending with an
           assistant turn whose content is non-empty (prompts=True, for generating: or ending
           with another turn, the prompt to answer)}
    Returns dicts {"id", "task", "text"} or {"id", "task", "messages"}. A bad record raises DataError
    naming the file, the line (JSON lines, 1-based) or row (0-based), and the field; with skip_bad it
    is left out, counted in the log and listed in `skipped_path` (default `<path>.skipped.jsonl`).
    """
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {FORMATS}", path=path)
    convert = _lm_converter(path) if format == "lm" else functools.partial(_chat_record, prompts=prompts)
    return convert_rows(read_rows(path), path, convert, skip_bad=skip_bad, skipped_path=skipped_path)
