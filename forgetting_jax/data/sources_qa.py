"""Readers of the evaluation benchmarks used as fine-tuning tasks: MMLU, BIG-Bench Hard, TruthfulQA."""

import logging
import os
import re

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.rows import CSV_SUFFIXES, Row, csv_first_row, read_rows, strip_compression
from forgetting_jax.data.sources_base import chat, read, row_id, task_from_path
from forgetting_jax.data.validate import convert_rows, require_int, require_str, require_str_list

log = logging.getLogger(__name__)

CHOICE_LETTERS = "ABCDEFGHIJ"
MMLU_COLUMNS = ("question", "A", "B", "C", "D", "answer")
_MMLU_FILE = re.compile(r"^(.+)_(?:test|dev|val|validation|train|auxiliary_train)$")


def _mmlu_rows(path: str, name: str | None, split: str) -> list[Row]:
    """Rows of an MMLU file; the original CSVs have no header row: their columns are MMLU_COLUMNS."""
    columns = None
    if os.path.isfile(path) and os.path.splitext(strip_compression(path))[1].lower() in CSV_SUFFIXES:
        first = [cell.strip().lower() for cell in csv_first_row(path)]
        if "question" not in first:
            columns = MMLU_COLUMNS
    return list(read_rows(path, name=name, split=split, columns=columns))


def _mmlu_file_subject(path: str) -> str | None:
    """"abstract_algebra" of ".../abstract_algebra_test.csv" (the original file names), else None."""
    if not os.path.isfile(path):
        return None
    match = _MMLU_FILE.match(task_from_path(path))
    return match.group(1) if match else None


def _mmlu_subject(values: dict, default: str | None) -> str:
    return require_str(values, "subject", optional=default is not None, default=default) or default


def _mmlu_question(values: dict) -> tuple[str, str]:
    """(question block ending in "Answer:", answer letter) of one MMLU row: `choices` (a list) or
    columns A, B, C, D; `answer` an index or a letter."""
    question = require_str(values, "question")
    if "choices" in values:
        choices = require_str_list(values, "choices", min_length=2)
    else:
        letters = [letter for letter in CHOICE_LETTERS if letter in values]
        if len(letters) < 2 or letters != list(CHOICE_LETTERS[: len(letters)]):
            raise DataError("is missing (and there are no columns A, B, C, D)", field="choices")
        choices = [require_str(values, letter, nonempty=False) for letter in letters]
    if len(choices) > len(CHOICE_LETTERS):
        raise DataError(f"has {len(choices)} choices, at most {len(CHOICE_LETTERS)} are supported",
                        field="choices")
    answer = values.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in CHOICE_LETTERS:
        index = CHOICE_LETTERS.index(answer.strip().upper())
    elif isinstance(answer, str) and answer.strip().isdigit():
        index = int(answer.strip())
    else:
        index = require_int(values, "answer")
    if not 0 <= index < len(choices):
        raise DataError(f"{answer!r} is not one of the {len(choices)} choices", field="answer")
    lines = [question.strip()] + [f"{CHOICE_LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:", CHOICE_LETTERS[index]


def _mmlu_shots(dev_path: str, subject: str | None, *, skip_bad: bool, name: str | None,
                split: str) -> dict[str, list[str]]:
    """Answered dev questions per subject, in file order."""
    default = subject or _mmlu_file_subject(dev_path)

    def convert_dev(row: Row) -> list[dict]:
        label = _mmlu_subject(row.values, default)
        block, letter = _mmlu_question(row.values)
        return [{"id": row_id(row, label), "task": label, "text": f"{block} {letter}"}]

    shots: dict[str, list[str]] = {}
    for record in convert_rows(_mmlu_rows(dev_path, name, split), dev_path, convert_dev, skip_bad=skip_bad,
                               skipped_path=None):
        shots.setdefault(record["task"], []).append(record["text"])
    return shots


def read_mmlu(path: str, *, dev_path: str | None = None, k: int = 5, subject: str | None = None,
              skip_bad: bool = False, skipped_path: str | None = None, name: str | None = None,
              split: str = "test", dev_split: str = "dev") -> list[dict]:
    """MMLU, one task per subject. Accepts
      the original CSVs `data/{split}/{subject}_{split}.csv`: no header row, columns question,
        A, B, C, D, answer letter (a CSV whose first row has a "question" cell is read as headed);
      cais/mmlu (parquet or JSON lines): `question`, `subject`, `choices` list, `answer` index.
    Subject: the row's `subject`, else `subject` (the argument), else the file name's
    "{subject}_{split}". Id: the row's `id`, else "<subject>:<row>".
    Each prompt starts with the first k questions of the same subject in the dev split, answered,
    then the question; the response is its letter. Dev questions come from `dev_path` (one file of
    all subjects, or with "{task}" one file per subject: "data/dev/{task}_dev.csv"), or
    `split=dev_split` of a hub dataset.
    """
    rows = _mmlu_rows(path, name, split)
    default = subject or _mmlu_file_subject(path)
    shots: dict[str, list[str]] = {}
    if k > 0:
        if dev_path is None and os.path.exists(path):
            raise DataError(f"k={k} shots need the dev split: pass dev_path", path=path)
        if dev_path is not None and "{task}" in dev_path:
            for label in dict.fromkeys(_try_subject(row, default) for row in rows):
                if label is not None:
                    per_subject = _mmlu_shots(dev_path.replace("{task}", label), label, skip_bad=skip_bad,
                                              name=name, split=dev_split)
                    shots[label] = per_subject.get(label, [])
        else:
            shots = _mmlu_shots(dev_path or path, subject, skip_bad=skip_bad, name=name, split=dev_split)
    warned: set[str] = set()

    def convert_row(row: Row) -> list[dict]:
        label = _mmlu_subject(row.values, default)
        block, letter = _mmlu_question(row.values)
        examples = shots.get(label, [])[:k]
        if len(examples) < k and label not in warned:
            warned.add(label)
            log.warning("MMLU subject %r has %d dev questions for %d shots", label, len(examples), k)
        header = f"The following are multiple choice questions (with answers) about {label.replace('_', ' ')}."
        prompt = "\n\n".join([header] + examples + [block])
        return [{"id": row_id(row, label), "task": label, "messages": chat(prompt, letter)}]

    return convert_rows(rows, path, convert_row, skip_bad=skip_bad, skipped_path=skipped_path)


def _try_subject(row: Row, default: str | None) -> str | None:
    if row.values is None:
        return None
    try:
        return _mmlu_subject(row.values, default)
    except DataError:
        return None


def read_bbh(path: str, *, task: str | None = None, skip_bad: bool = False, skipped_path: str | None = None,
             name: str | None = None, split: str = "test") -> list[dict]:
    """BIG-Bench Hard (`input`, `target`). Accepts
      the original per-task files `{task}.json` ({"canary": ..., "examples": [{input, target}]};
        the paper's split files `{task}_{split}.json` likewise),
      hub shards `{task}/test/0000.parquet` or `{task}/test-00000-of-00001.parquet`, JSON lines.
    Task: the row's `task` field, else `task` (the argument), else `name`, else the file's task:
    its stem without a "_{split}" suffix, or for a shard the folder above the shard and its split
    folder (never "0000" or "test"). Id: the row's `id`, else "<task>:<row>".
    """
    default_task = task or name or task_from_path(path, strip_split=True)

    def convert_row(row: Row) -> list[dict]:
        label = require_str(row.values, "task", optional=True) or default_task
        prompt = require_str(row.values, "input")
        target = require_str(row.values, "target")
        return [{"id": row_id(row, label), "task": label, "messages": chat(prompt, target)}]

    return read(path, convert_row, skip_bad=skip_bad, skipped_path=skipped_path, name=name, split=split,
                field="examples")


def _truthfulqa_values(values: dict) -> dict:
    """Field names of the original TruthfulQA.csv ("Best Answer") as the hub's ("best_answer")."""
    return {key.strip().lower().replace(" ", "_") if isinstance(key, str) else key: value
            for key, value in values.items()}


def read_truthfulqa(path: str, *, skip_bad: bool = False, skipped_path: str | None = None,
                    name: str | None = "generation", split: str = "validation",
                    category_prefix: bool = False) -> list[dict]:
    """TruthfulQA as a generation task: the prompt is the question, the response the best answer.
    Accepts
      the original TruthfulQA.csv (Type, Category, Question, Best Answer, Correct Answers,
        Incorrect Answers, Source; answer lists joined by "; "),
      the hub's generation layout (type, category, question, best_answer, correct_answers,
        incorrect_answers, source) as parquet, CSV or JSON lines.
    The hub's multiple_choice layout (question, mc1_targets, mc2_targets) has no category and no
    best answer and is rejected with a DataError saying so.
    Task: `category` ("Misconceptions: Topical"); category_prefix=True keeps only the part before
    the first ":" ("Misconceptions"), the grouping the paper's code selects tasks by.
    Id: the row's `id`, else "<category>:<row>".
    """
    rows = list(read_rows(path, name=name, split=split))
    first = next((_truthfulqa_values(row.values) for row in rows if row.values is not None), {})
    if "mc1_targets" in first and "best_answer" not in first:
        raise DataError("is TruthfulQA's multiple_choice layout (question, mc1_targets, mc2_targets), "
                        "which has no category or best answer and is not supported: use the "
                        "generation layout (name='generation') or the original TruthfulQA.csv", path=path)

    def convert_row(row: Row) -> list[dict]:
        values = _truthfulqa_values(row.values)
        category = require_str(values, "category")
        label = category.split(":", 1)[0].strip() if category_prefix else category
        question = require_str(values, "question")
        answer = require_str(values, "best_answer")
        return [{"id": row_id(row, label), "task": label, "messages": chat(question, answer)}]

    return convert_rows(rows, path, convert_row, skip_bad=skip_bad, skipped_path=skipped_path)
