"""Readers of upstream text (the Pile, Dolma, RedPajama) and of instruction data (Tulu v2, Dolly, FLAN)."""

import logging
from typing import Sequence

from forgetting_jax.data.errors import DataError
from forgetting_jax.experiment.choices import DUPLICATES
from forgetting_jax.data.rows import Row, read_rows
from forgetting_jax.data.sources_base import (
    NamedField, chat, doc_id, field_str, first_field, place, read, row_id, stem)
from forgetting_jax.data.tokenize import chunk_text
from forgetting_jax.data.validate import convert_rows, require_messages, require_str

log = logging.getLogger(__name__)

SOURCE_FIELDS = ("source", "meta.pile_set_name")
TASK_FIELDS = ("task", "task_name")
DOLMA_FIELDS = ("added", "created", "metadata")
FLAN_SUBMIXTURES = {"flan", "flan2021", "t0", "niv2", "cot", "dialog"}


def read_upstream(path: str, *, tokenizer=None, max_length: int | None = None, source: str | None = None,
                  source_field: str | None = None, skip_bad: bool = False, skipped_path: str | None = None,
                  name: str | None = None, split: str = "train", duplicates: str = "error",
                  qualify_ids: bool | None = None) -> list[dict]:
    """Language-model text: one record per document, or per chunk with a tokenizer.

    Accepts JSON lines (.jsonl/.json, optionally .gz or .zst), parquet, CSV or a hub name, with rows
      the Pile:  {"text", "meta": {"pile_set_name": "Pile-CC"}}             (no id; *.jsonl.zst)
      Dolma:     {"id", "text", "source", "added", "created", "metadata"}  (*.json.gz / *.jsonl.gz)
      plain:     {"text", optional "id", optional "source"}
    Source label (the record's "task"): the row's `source_field` (a dotted path into nested
    objects); by default the first of `source`, `meta.pile_set_name` the row has; else `source`
    (the argument), else the file's stem. A source_field named explicitly that no row has is a
    DataError.
    Document id: the row's `id`; Dolma ids are unique only within their source, so an id is
    qualified as "<source>/<id>" (source: the row's own label) when qualify_ids is True, or with
    qualify_ids=None (default) when the row is a Dolma row (it has `added`, `created` or `metadata`
    beside its source). A row without an id gets "<file stem>:<line>" (JSON lines, CSV: its
    1-based line; "<stem>:<item>" in a JSON array, "<stem>:<row>" in parquet).
    Record ids are "<doc id>:<chunk>" (chunk 0 without a tokenizer).
    duplicates: two rows with the same document id are a DataError naming both places ("error"),
    or the later one is left out and counted in one log warning ("skip").
    With a tokenizer and max_length, each document is cut into chunks that fit max_length tokens
    (`tokenize.chunk_text`); a last chunk too short to score joins the previous one when they fit,
    else is dropped; one log line counts those tails.
    """
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates={duplicates!r}: expected one of {DUPLICATES}")
    file_stem = stem(path)
    default_source = source or file_stem
    fields = (source_field,) if source_field else SOURCE_FIELDS
    named = NamedField(source_field, "source_field")
    seen: dict[str, str] = {}
    dropped_duplicates = 0
    tails: dict[str, int] = {}

    def convert_row(row: Row) -> list[dict]:
        nonlocal dropped_duplicates
        values = row.values
        named.see(values)
        text = require_str(values, "text")
        field = first_field(values, fields)
        row_source = field_str(values, field, optional=True) if field else None
        own_id = doc_id(row)
        if own_id is None:
            document = f"{file_stem}:{place(row)}"
        elif row_source and (qualify_ids or (qualify_ids is None and any(f in values for f in DOLMA_FIELDS))):
            document = f"{row_source}/{own_id}"
        else:
            document = own_id
        if document in seen:
            if duplicates == "skip":
                dropped_duplicates += 1
                return []
            raise DataError(f"duplicate document id {document!r}: first at {path} {seen[document]}, again at "
                            f"{path} {row.where} (duplicates='skip' leaves the later ones out)",
                            field="id", record_id=own_id)
        pieces = (chunk_text(tokenizer, text, max_length, tails=tails)
                  if tokenizer is not None and max_length else [text])
        seen[document] = row.where
        label = row_source or default_source
        return [{"id": f"{document}:{k}", "task": label, "text": piece} for k, piece in enumerate(pieces)]

    records = convert_rows(read_rows(path, name=name, split=split), path, convert_row, skip_bad=skip_bad,
                           skipped_path=skipped_path)
    named.check(path)
    if dropped_duplicates:
        log.warning("%s: left out %d rows whose document id was seen before (duplicates='skip')",
                    path, dropped_duplicates)
    if tails:
        log.warning("%s: %d documents ended in a chunk too short to score: %d merged into the chunk "
                    "before, %d dropped", path, sum(tails.values()), tails.get("merged", 0),
                    tails.get("dropped", 0))
    return records


def read_tulu(path: str, *, skip_bad: bool = False, skipped_path: str | None = None,
              name: str | None = None, split: str = "train", whole_dataset: bool = False) -> list[dict]:
    """Tulu-v2 SFT mixture (`messages`, `dataset`, optional `id`; allenai/tulu-v2-sft-mixture as
    JSON lines, JSON or parquet).

    Task: `dataset` up to its first "." ("flan_v2.123" -> "flan_v2", the paper's grouping);
    whole_dataset=True keeps the whole field. Id: the row's `id`, else "<task>:<row>".
    The conversation is kept up to its last assistant turn, which is the response.
    """

    def convert_row(row: Row) -> list[dict]:
        dataset = require_str(row.values, "dataset")
        task = dataset if whole_dataset else dataset.split(".", 1)[0]
        if not task.strip():
            raise DataError(f"{dataset!r} has no task name before its first '.'", field="dataset")
        messages = require_messages(row.values, "messages", must_end_with_response=False)
        return [{"id": row_id(row, task), "task": task, "messages": messages}]

    return read(path, convert_row, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


DOLLY_PROMPTS = ("context_first", "instruction_first")


def read_dolly(path: str, *, skip_bad: bool = False, skipped_path: str | None = None,
               name: str | None = None, split: str = "train", prompt_style: str = "context_first") -> list[dict]:
    """Dolly-15k (`instruction`, `context`, `response`, `category`; databricks-dolly-15k.jsonl or
    the hub's parquet): one task per category. Id: the row's `id`, else "<category>:<row>".

    Prompt, when the context is non-empty:
      prompt_style="context_first" (default, the paper's): "Context: {context}\\n\\n{instruction}"
      prompt_style="instruction_first":                     "{instruction}\\n\\n{context}"
    and the instruction alone when the context is empty.
    """
    if prompt_style not in DOLLY_PROMPTS:
        raise ValueError(f"prompt_style={prompt_style!r}: expected one of {DOLLY_PROMPTS}")

    def convert_row(row: Row) -> list[dict]:
        values = row.values
        task = require_str(values, "category")
        instruction = require_str(values, "instruction")
        context = require_str(values, "context", nonempty=False, optional=True, default="")
        response = require_str(values, "response")
        if not context.strip():
            prompt = instruction
        elif prompt_style == "context_first":
            prompt = f"Context: {context}\n\n{instruction}"
        else:
            prompt = f"{instruction}\n\n{context}"
        return [{"id": row_id(row, task), "task": task, "messages": chat(prompt, response)}]

    return read(path, convert_row, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


def read_flan(path: str, *, task: str | None = None, task_field: str | None = None, skip_bad: bool = False,
              skipped_path: str | None = None, name: str | None = None, split: str = "train") -> list[dict]:
    """FLAN: the prompt is `inputs`, the response `targets`. Accepts
      the paper's per-task files `{task}_{split}.json` (a JSON array of {inputs, targets, task}),
      Muennighoff/flan (JSON lines or parquet of {inputs, targets, task}),
      FLAN 2022 exports ({inputs, targets, task_source, task_name, template_type}).
    Task: the row's `task_field` (a dotted path); by default the first of `task`, `task_name` the
    row has; else `task` (the argument); else the row is bad (field "task"). A task_field named
    explicitly that no row has is a DataError. When every row's task is a sub-mixture name (flan,
    t0, niv2, cot, dialog: e.g. task_field="task_source") a warning says so.
    Id: the row's `id`, else "<task>:<row>".
    """
    named = NamedField(task_field, "task_field")
    fields = (task_field,) if task_field else TASK_FIELDS

    def convert_row(row: Row) -> list[dict]:
        named.see(row.values)
        field = first_field(row.values, fields)
        if field is not None:
            label = field_str(row.values, field)
        elif task is not None:
            label = task
        else:
            raise DataError("is missing (and no task was given)", field=fields[0])
        inputs = require_str(row.values, "inputs")
        targets = require_str(row.values, "targets")
        return [{"id": row_id(row, label), "task": label, "messages": chat(inputs, targets)}]

    records = convert_rows(read_rows(path, name=name, split=split), path, convert_row, skip_bad=skip_bad,
                           skipped_path=skipped_path)
    named.check(path)
    _warn_submixture(path, {r["task"] for r in records})
    return records


def _warn_submixture(path: str, tasks: Sequence[str] | set[str]) -> None:
    if len(tasks) == 1 and next(iter(tasks)).lower() in FLAN_SUBMIXTURES:
        log.warning("%s: the only task is %r, a FLAN sub-mixture name, not a task; use the task field "
                    "(task_field='task_name' in FLAN 2022 exports) or one file per task", path,
                    next(iter(tasks)))
