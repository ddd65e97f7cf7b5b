"""Forgetting as lost answers (matrix.metric=exact_match): every model of the matrix answers every
upstream prompt by greedy decoding, and an answer is judged right or wrong against the example's
reference (score/exact_match.py, by answer kind).

  correct_before [N]     bool: the base model's answer to example j is right
  correct_after  [M, N]  bool: the model fine-tuned on task i answers example j right
  drop           [M, N]  D[i, j] = 1[correct_before[j] and not correct_after[i, j]]

The matrix file then carries these three arrays, `metric` = "exact_match", and Z = D (float32),
so that `analyze`, `predict` and the report study the binary matrix; the NLL arrays (ft_nll,
base_nll) are there as well. As in the paper's final code (AuCson/low-rank-forgetting), its
columns are by default only the upstream examples the base model answers right
(matrix.em_columns = base_correct; a column the base gets wrong is 0 in every row): `kept_columns`
chooses them and the matrix store cuts every array with an upstream axis to them when it
assembles the file, which records `em_columns`, `columns` [K] (int64: the kept examples' indices
in the N upstream examples) and `upstream_size` (N). em_columns = all keeps the N columns.

With matrix.max_new_tokens = 0 the budget is the paper's 512 new tokens where the model's
positions leave room for them (score/exact_match.py answer_budget). Answers are cached like rows,
by fingerprint (the model's and the answer set's: prompts, references, kind, budget, stop
strings, scoring dtype); the columns are chosen later, so they are not part of it:

  W/matrix/answers/<task>/<fp>.npz   task, correct [N] bool, completions [N] str, fingerprint
  (the base model's under the task name "_base")
"""

import dataclasses
import hashlib
import logging
import os
from typing import Any, Sequence

import numpy as np

from forgetting_jax.experiment.choices import EM_COLUMNS
from forgetting_jax.matrix.store import read_checked
from forgetting_jax.utils.runtime import is_main
from forgetting_jax.utils.fingerprint import fingerprint, task_filename
from forgetting_jax.utils.io import write_npz

log = logging.getLogger("forgetting_jax.run")

BASE = "_base"  # the task name of the base model's answers
ANSWER_ARRAYS = {"task": ("U", 0), "correct": ("b", 1), "completions": ("U", 1)}


@dataclasses.dataclass(frozen=True)
class AnswerSet:
    """The upstream prompts to answer and how answers are judged."""

    kind: str  # score/exact_match.ANSWER_KINDS
    prompts: tuple[str, ...]  # [N] prompt texts (chat: rendered with the generation prompt)
    prompt_ids: tuple[np.ndarray, ...]  # [N] their tokens (as they are: the template writes BOS), once for every model
    references: tuple[str, ...]  # [N] reference answers
    max_new_tokens: int
    stop_strings: tuple[str, ...]
    fingerprint: str


def answer_set(matrix: Any, tokenizer, records: Sequence[dict], max_positions: int) -> AnswerSet:
    """The AnswerSet of the upstream `records` (matrix/upstream.py load_upstream_records) under
    config.matrix, for a model of `max_positions` positions (max_position_embeddings: the budget
    of matrix.max_new_tokens = 0); ValueError naming the first record without a reference answer."""
    from forgetting_jax.data.prompts import prompt_text, reference_answer
    from forgetting_jax.score import exact_match

    kind = matrix.answer_kind if matrix.answer_kind != "auto" else exact_match.answer_kind(matrix.upstream)
    references = []
    for record in records:
        reference = reference_answer(record)
        if reference is None:
            raise ValueError(f"matrix.metric=exact_match: upstream record {record['id']!r} of matrix.upstream="
                             f"{matrix.upstream!r} has no reference answer (a final assistant message); "
                             "exact match needs chat records with answers (demo_tasks, mmlu, bbh, truthfulqa, "
                             "tulu, flan, dolly, chat)")
        references.append(reference)
    from forgetting_jax.models.generate import encode_prompts

    prompts = tuple(prompt_text(tokenizer, record) for record in records)
    prompt_ids = tuple(encode_prompts(tokenizer, prompts))
    longest = max((len(ids) for ids in prompt_ids), default=0)
    if int(matrix.max_new_tokens):
        budget, why = int(matrix.max_new_tokens), "matrix.max_new_tokens"
    else:
        budget, why = exact_match.answer_budget(kind, int(max_positions), longest)
    log.info("answers: up to %d new tokens (%s); the longest of %d upstream prompts has %d tokens", budget, why,
             len(prompts), longest)
    stops = tuple(exact_match.stop_strings(kind))
    digest = hashlib.sha256()
    for prompt, reference in zip(prompts, references):
        digest.update(prompt.encode("utf-8") + b"\0" + reference.encode("utf-8") + b"\1")
    fp = fingerprint({"kind": kind, "texts": digest.hexdigest(), "max_new_tokens": budget, "stops": list(stops)})
    return AnswerSet(kind, prompts, prompt_ids, tuple(references), budget, stops, fp)


def answer(config: Any, params: Any, answers: AnswerSet, tokenizer, eos_ids: Sequence[int], mesh: Any = None,
           batch_size: int = 64, what: str = "a model") -> tuple[np.ndarray, list[str]]:
    """(correct [N] bool, completions [N]) of the model `params` (its config `config`) on `answers`."""
    from forgetting_jax.models.generate import Generator, decode_completions, stop_token_sequences
    from forgetting_jax.score.exact_match import correctness

    new_ids, stats = Generator(config, params, mesh=mesh).generate(
        list(answers.prompt_ids), answers.max_new_tokens, eos_ids,
        stop_token_sequences(tokenizer, answers.stop_strings), batch_size)
    completions = decode_completions(tokenizer, new_ids, answers.stop_strings)
    correct = np.asarray(correctness(answers.kind, completions, list(answers.references)), bool)
    log.info("answered %d upstream prompts with %s: %.1f%% right (%s), %.0f new tokens/s", len(completions), what,
             100 * float(correct.mean()) if len(correct) else 0.0, answers.kind, stats.tokens_per_second)
    return correct, list(completions)


class AnswerStore:
    """W/matrix/answers/<task>/<fp>.npz files (see the module docstring)."""

    def __init__(self, matrix_root: str):
        self.root = os.path.join(matrix_root, "answers")

    def path(self, task: str, fp: str) -> str:
        return os.path.join(self.root, task_filename(task), fp + ".npz")

    def read(self, task: str, fp: str, n: int) -> np.ndarray | None:
        """correct [n] of `task` under fingerprint `fp`, or None (absent, another fingerprint, or
        damaged: moved aside)."""
        data = read_checked(self.path(task, fp), fp, ANSWER_ARRAYS, n)
        return None if data is None or str(data["task"]) != task else data["correct"]

    def write(self, task: str, fp: str, correct: np.ndarray, completions: Sequence[str]) -> None:
        if is_main():
            write_npz(self.path(task, fp), task=np.asarray(task), correct=np.asarray(correct, bool),
                      completions=np.asarray(list(completions), dtype=str), fingerprint=np.asarray(fp))


def answers_fingerprint(model_fp: str, answers: AnswerSet) -> str:
    """The fingerprint of one model's answers: the model's (a row's or the base scores') and the
    answer set's."""
    return fingerprint({"model": model_fp, "answers": answers.fingerprint})


def kept_columns(correct_before_N: np.ndarray, em_columns: str) -> np.ndarray:
    """int64 [K]: the indices of the upstream examples that are columns of the matrix under
    matrix.em_columns: base_correct, those the base model answers right (at least 2, or
    ValueError naming matrix.em_columns); all, the N of them."""
    before_N = np.asarray(correct_before_N, bool)
    if em_columns == "all":
        return np.arange(before_N.size, dtype=np.int64)
    if em_columns not in EM_COLUMNS:
        raise ValueError(f"matrix.em_columns={em_columns!r} is not one of {', '.join(EM_COLUMNS)}")
    columns = np.flatnonzero(before_N).astype(np.int64)
    if columns.size < 2:
        raise ValueError(f"matrix.em_columns=base_correct: the base model answers {columns.size} of the "
                         f"{before_N.size} upstream prompts right, and only those are columns of the matrix (it "
                         "needs at least 2); set matrix.em_columns=all, or give the base more upstream examples "
                         "it can answer")
    return columns


def answer_arrays(correct_before_N: np.ndarray, correct_after: dict[str, np.ndarray], tasks: Sequence[str],
                  em_columns: str = "all") -> dict[str, np.ndarray]:
    """The exact-match arrays of the matrix file for its rows `tasks`, over all N upstream
    examples: metric, em_columns (recorded: the store cuts the columns, `kept_columns`),
    correct_before [N], correct_after [M, N], drop [M, N] uint8, and Z [M, N] = drop as float32."""
    before_N = np.asarray(correct_before_N, bool)
    after_MxN = (np.stack([np.asarray(correct_after[t], bool) for t in tasks]) if tasks
                 else np.zeros((0, before_N.size), bool))
    drop_MxN = before_N[None, :] & ~after_MxN
    return {"metric": np.asarray("exact_match"), "em_columns": np.asarray(em_columns), "correct_before": before_N,
            "correct_after": after_MxN, "drop": drop_MxN.astype(np.uint8), "Z": drop_MxN.astype(np.float32)}
