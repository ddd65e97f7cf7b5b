"""Readers for the paper's sources: each turns a file (or a hub dataset) into records.

Every reader takes `path` (a local .jsonl/.json/.parquet/.csv file, or a `datasets` hub name with
`name` and `split` where a network or cache exists), validates every row, and returns records
  lm:   {"id", "task", "text"}      (upstream text; "task" is the source label)
  chat: {"id", "task", "messages"}  (prompt turns, then the response as the last assistant turn)
in file order. Ids come from the row's "id" field when it has one, else from the row's ordinal
("<task>:<row>"), counted over all rows including skipped ones, so skipping a bad row never shifts
another row's id. Bad rows raise DataError naming the file, the line and the field, or with
skip_bad are counted in the log and listed in a sidecar file (see `validate.convert_rows`).
"""

import logging
import os
from typing import Callable

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.rows import Row, read_rows
from forgetting_jax.data.tokenize import chunk_text
from forgetting_jax.data.validate import (
    convert_rows, require_int, require_messages, require_str, require_str_list)

log = logging.getLogger(__name__)

CHOICE_LETTERS = "ABCDEFGHIJ"


def _stem(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv", ".arrow"):
        base = base.removesuffix(suffix)
    return base


def _doc_id(row: Row) -> str | None:
    """The row's own id (a string, or an integer written in decimal), if it has one."""
    value = row.values.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return require_str(row.values, "id", optional=True)


def _row_id(row: Row, task: str) -> str:
    return _doc_id(row) or f"{task}:{row.index}"


def _chat(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _read(path: str, convert: Callable[[Row], list[dict]], *, skip_bad: bool, skipped_path: str | None,
          name: str | None, split: str, field: str | None = None) -> list[dict]:
    rows = read_rows(path, field=field, name=name, split=split)
    return convert_rows(rows, path, convert, skip_bad=skip_bad, skipped_path=skipped_path)


def read_upstream(path: str, *, tokenizer=None, max_length: int | None = None, source: str | None = None,
                  source_field: str = "source", skip_bad: bool = False, skipped_path: str | None = None,
                  name: str | None = None, split: str = "train") -> list[dict]:
    """Language-model text (Dolma, the Pile, RedPajama style): `text`, optional `id` and source.

    With a tokenizer and max_length, each document is cut into chunks that fit max_length tokens
    (`tokenize.chunk_text`); chunk ids are "<doc id>:<chunk>" (doc id: the `id` field, else the row
    ordinal). The source label is the row's `source_field`, else `source`, else the file's stem.
    """
    default_source = source or _stem(path)

    def convert(row: Row) -> list[dict]:
        text = require_str(row.values, "text")
        doc_id = _doc_id(row) or str(row.index)
        label = require_str(row.values, source_field, optional=True) or default_source
        pieces = chunk_text(tokenizer, text, max_length) if tokenizer is not None and max_length else [text]
        return [{"id": f"{doc_id}:{k}", "task": label, "text": piece} for k, piece in enumerate(pieces)]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


def read_tulu(path: str, *, skip_bad: bool = False, skipped_path: str | None = None,
              name: str | None = None, split: str = "train") -> list[dict]:
    """Tulu-v2 SFT mixture (`messages`, `dataset`, optional `id`): one task per `dataset`.

    The conversation is kept up to its last assistant turn, which is the response.
    """

    def convert(row: Row) -> list[dict]:
        task = require_str(row.values, "dataset")
        messages = require_messages(row.values, "messages", must_end_with_response=False)
        return [{"id": _row_id(row, task), "task": task, "messages": messages}]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


def read_dolly(path: str, *, skip_bad: bool = False, skipped_path: str | None = None,
               name: str | None = None, split: str = "train") -> list[dict]:
    """Dolly-15k (`instruction`, `context`, `response`, `category`): one task per category.

    Prompt: the instruction, then a blank line and the context when there is one.
    """

    def convert(row: Row) -> list[dict]:
        values = row.values
        task = require_str(values, "category")
        instruction = require_str(values, "instruction")
        context = require_str(values, "context", nonempty=False, optional=True, default="")
        response = require_str(values, "response")
        prompt = f"{instruction}\n\n{context}" if context.strip() else instruction
        return [{"id": _row_id(row, task), "task": task, "messages": _chat(prompt, response)}]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


def read_flan(path: str, *, task: str | None = None, task_field: str = "task", skip_bad: bool = False,
              skipped_path: str | None = None, name: str | None = None, split: str = "train") -> list[dict]:
    """FLAN by task (`inputs`, `targets`, `task`); `task` names the task of a file without the field."""

    def convert(row: Row) -> list[dict]:
        label = require_str(row.values, task_field, optional=task is not None, default=task)
        inputs = require_str(row.values, "inputs")
        targets = require_str(row.values, "targets")
        return [{"id": _row_id(row, label), "task": label, "messages": _chat(inputs, targets)}]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


def _mmlu_question(values: dict) -> tuple[str, str]:
    """(question block ending in "Answer:", answer letter) of one MMLU row."""
    question = require_str(values, "question")
    choices = require_str_list(values, "choices", min_length=2)
    if len(choices) > len(CHOICE_LETTERS):
        raise DataError(f"has {len(choices)} choices, at most {len(CHOICE_LETTERS)} are supported",
                        field="choices")
    answer = values.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in CHOICE_LETTERS:
        index = CHOICE_LETTERS.index(answer.strip().upper())
    else:
        index = require_int(values, "answer")
    if not 0 <= index < len(choices):
        raise DataError(f"{answer!r} is not one of the {len(choices)} choices", field="answer")
    lines = [question.strip()] + [f"{CHOICE_LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:", CHOICE_LETTERS[index]


def read_mmlu(path: str, *, dev_path: str | None = None, k: int = 5, subject: str | None = None,
              skip_bad: bool = False, skipped_path: str | None = None, name: str | None = None,
              split: str = "test", dev_split: str = "dev") -> list[dict]:
    """MMLU (`question`, `choices`, `answer` index or letter, `subject`): one task per subject.

    Each prompt starts with the first k questions of the same subject in the dev split (`dev_path`,
    or `split=dev_split` of a hub dataset), answered, then the question; the response is its letter.
    """
    shots: dict[str, list[str]] = {}
    if k > 0:
        if dev_path is None and os.path.exists(path):
            raise DataError(f"k={k} shots need the dev split: pass dev_path", path=path)
        dev_source = dev_path or path

        def convert_dev(row: Row) -> list[dict]:
            label = require_str(row.values, "subject", optional=subject is not None, default=subject)
            block, letter = _mmlu_question(row.values)
            return [{"id": _row_id(row, label), "task": label, "text": f"{block} {letter}"}]

        for record in _read(dev_source, convert_dev, skip_bad=skip_bad, skipped_path=None,
                            name=name, split=dev_split):
            shots.setdefault(record["task"], []).append(record["text"])
    warned: set[str] = set()

    def convert(row: Row) -> list[dict]:
        label = require_str(row.values, "subject", optional=subject is not None, default=subject)
        block, letter = _mmlu_question(row.values)
        examples = shots.get(label, [])[:k]
        if len(examples) < k and label not in warned:
            warned.add(label)
            log.warning("MMLU subject %r has %d dev questions for %d shots", label, len(examples), k)
        header = f"The following are multiple choice questions (with answers) about {label.replace('_', ' ')}."
        prompt = "\n\n".join([header] + examples + [block])
        return [{"id": _row_id(row, label), "task": label, "messages": _chat(prompt, letter)}]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


def read_bbh(path: str, *, task: str | None = None, skip_bad: bool = False, skipped_path: str | None = None,
             name: str | None = None, split: str = "test") -> list[dict]:
    """BIG-Bench Hard (`input`, `target`): the task is the row's `task` field, else `task`, else the
    file's stem. The original per-task JSON files ({"examples": [...]}) are read as they are."""
    default_task = task or name or _stem(path)

    def convert(row: Row) -> list[dict]:
        label = require_str(row.values, "task", optional=True) or default_task
        prompt = require_str(row.values, "input")
        target = require_str(row.values, "target")
        return [{"id": _row_id(row, label), "task": label, "messages": _chat(prompt, target)}]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split,
                 field="examples")


def read_truthfulqa(path: str, *, skip_bad: bool = False, skipped_path: str | None = None,
                    name: str | None = "generation", split: str = "validation") -> list[dict]:
    """TruthfulQA generation (`question`, `best_answer`, `category`): one task per category."""

    def convert(row: Row) -> list[dict]:
        label = require_str(row.values, "category")
        question = require_str(row.values, "question")
        answer = require_str(row.values, "best_answer")
        return [{"id": _row_id(row, label), "task": label, "messages": _chat(question, answer)}]

    return _read(path, convert, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split)


READERS = {
    "upstream": read_upstream,
    "tulu": read_tulu,
    "dolly": read_dolly,
    "flan": read_flan,
    "mmlu": read_mmlu,
    "bbh": read_bbh,
    "truthfulqa": read_truthfulqa,
}
