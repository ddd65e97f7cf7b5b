"""Field checks and the row-conversion loop that raises on bad records or skips them with a report.

Every check raises DataError naming the field; `convert_rows` adds the file and the line, so a bad
record is either an error that names all three or, with skip_bad, a logged count and a sidecar
JSON-lines file of the skipped records (place, id when known, field, reason).
"""

import json
import logging
import os
from typing import Any, Callable, Iterable

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.rows import Row
from forgetting_jax.utils.io import write_text

log = logging.getLogger(__name__)

_MISSING = object()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def require_str(values: dict, field: str, *, nonempty: bool = True, optional: bool = False,
                default: str | None = None) -> str | None:
    """values[field] as a str; nonempty: also reject "" and whitespace-only text.

    optional: a missing or null field gives `default` instead of an error.
    """
    value = values.get(field, _MISSING)
    if value is _MISSING or value is None:
        if optional:
            return default
        raise DataError("is missing" if value is _MISSING else "is null", field=field)
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {_type_name(value)}", field=field)
    if nonempty and not value.strip():
        raise DataError("is empty or whitespace only", field=field)
    return value


def require_int(values: dict, field: str) -> int:
    value = values.get(field, _MISSING)
    if value is _MISSING:
        raise DataError("is missing", field=field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"must be an integer, got {_type_name(value)}", field=field)
    return value


def require_str_list(values: dict, field: str, *, min_length: int = 1) -> list[str]:
    value = values.get(field, _MISSING)
    if value is _MISSING:
        raise DataError("is missing", field=field)
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of strings, got {_type_name(value)}", field=field)
    if len(value) < min_length:
        raise DataError(f"must hold at least {min_length} items, got {len(value)}", field=field)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"must be a string, got {_type_name(item)}", field=f"{field}[{i}]")
    return list(value)


def require_messages(values: dict, field: str = "messages", *, must_end_with_response: bool = True,
                     prompt_only: bool = False) -> list[dict[str, str]]:
    """A conversation: a non-empty list of {role: str, content: str} whose response (its last
    assistant turn) has non-empty content.

    must_end_with_response: the last turn must be the assistant's; otherwise turns after the last
    assistant turn are dropped. prompt_only: a conversation that ends with a turn other than the
    assistant's (a prompt to answer: `generate`) is returned whole, its last turn non-empty.
    """
    value = values.get(field, _MISSING)
    if value is _MISSING or value is None:
        raise DataError("is missing" if value is _MISSING else "is null", field=field)
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of messages, got {_type_name(value)}", field=field)
    if not value:
        raise DataError("is an empty conversation", field=field)
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"must be an object with role and content, got {_type_name(message)}",
                            field=f"{field}[{i}]")
        try:
            role = require_str(message, "role")
            content = require_str(message, "content", nonempty=False)
        except DataError as err:
            raise DataError(err.reason, field=f"{field}[{i}].{err.field}") from None
        messages.append({"role": role, "content": content})
    if prompt_only and messages[-1]["role"] != "assistant":
        if not messages[-1]["content"].strip():
            raise DataError("the last turn (the prompt to answer) is empty or whitespace only",
                            field=f"{field}[{len(messages) - 1}].content")
        return messages
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise DataError("has no assistant turn to use as the response", field=field)
    if must_end_with_response and last != len(messages) - 1:
        raise DataError(f"must end with an assistant turn, ends with {messages[-1]['role']!r}",
                        field=f"{field}[{len(messages) - 1}].role")
    if not messages[last]["content"].strip():
        raise DataError("the response (last assistant turn) is empty or whitespace only",
                        field=f"{field}[{last}].content")
    return messages[: last + 1]


def default_sidecar(path: str) -> str | None:
    """Where the skipped-records report of a local file goes: beside it; None for dataset names."""
    return path + ".skipped.jsonl" if os.path.exists(path) else None


def convert_rows(
    rows: Iterable[Row],
    path: str,
    convert: Callable[[Row], list[dict]],
    *,
    skip_bad: bool = False,
    skipped_path: str | None = None,
) -> list[dict]:
    """Applies `convert` (row -> records, each with an "id") to every row, in order.

    Bad rows (parse errors, DataError from `convert`, duplicate ids) raise a DataError naming the
    file, the place and the field, or with skip_bad are left out, counted in the log and listed in
    `skipped_path` (default: beside the file). A duplicate keeps the first record with that id.
    """
    records: list[dict] = []
    first_seen: dict[str, str] = {}
    skipped: list[dict] = []
    total = 0
    for row in rows:
        total += 1
        record_id = _raw_id(row.values)
        try:
            if row.error is not None:
                raise row.error
            converted = convert(row)
            for record in converted:
                if record["id"] in first_seen:
                    raise DataError(f"duplicate id {record['id']!r} (first seen at {first_seen[record['id']]})",
                                    field="id", record_id=record["id"])
            for record in converted:
                first_seen[record["id"]] = row.where
        except DataError as err:
            err = err.located(path, row.where, record_id)
            if not skip_bad:
                raise err from None
            skipped.append({"where": row.where, "id": err.record_id, "field": err.field,
                            "reason": err.reason})
            continue
        records.extend(converted)
    if skipped:
        sidecar = skipped_path or default_sidecar(path)
        if sidecar:
            try:
                write_text(sidecar, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped))
            except OSError as err:
                log.warning("could not write the list of skipped records to %s: %s", sidecar, err)
                sidecar = None
        log.warning("skipped %d of %d records of %s (bad or duplicate); list: %s",
                    len(skipped), total, path, sidecar or "not written")
    if not records:
        raise DataError(f"no usable records (of {total}, {len(skipped)} skipped)", path=path)
    return records


def _raw_id(values: dict | None) -> str | None:
    if values is None:
        return None
    value = values.get("id")
    return value if isinstance(value, str) and value else None
