"""Is a greedy answer right? Answer extraction and comparison per dataset (the answer kinds).

The paper's code judges generated answers by exact match after SQuAD normalisation (lower case,
punctuation and the articles a / an / the removed, whitespace collapsed: `normalize_answer`,
`compute_exact` of its squad_f1.py), with a list of references counting as right when any
matches. As in the paper's final code (AuCson/low-rank-forgetting), a completion is judged on its
text before the first blank line (`before_blank_line`: `completion.split("\n\n")[0]`), cut before
any per-kind extraction. Per kind:

  mmlu        the reference is a choice letter (A-J). The answer is the standalone letter that
              starts the completion, or what follows its last "answer is" / "Answer:" ("B",
              "B. Paris", "(B)", "The answer is B" are all B; "Because of B" is no answer). A
              reference that is not a letter (the choice text) is compared by normalised exact match.
  bbh         the text after "the answer is" when present (BBH's chain-of-thought convention),
              else the first line. Multiple-choice targets "(A)" are compared by letter ("A", "(A)",
              "(A) Yes" all match "(A)"; SQuAD normalisation alone would erase the letter "a");
              other targets ("True", "valid", "12", "[ ] ]") by normalised exact match.
  truthfulqa  the first line, by normalised exact match against the best answer (or any of a list
              of correct answers).
  short       short Tulu / FLAN / Dolly answers: all of the text before the blank line (decoding
              stops at one too), by normalised exact match.
  demo        the bundled task suite: the first line, stripped, must equal the reference exactly
              (case, punctuation and spacing are the answer in tasks such as uppercase or
              kv_to_json).

`max_new_tokens(kind)` and `stop_strings(kind)` are the decoding defaults of each kind: a letter
needs a few tokens and ends at the line; a BBH answer, a TruthfulQA sentence or a short answer
end at a blank line. `answer_budget` is the budget of matrix.max_new_tokens = 0: the paper's 512
new tokens where the model's positions leave room for them after the longest prompt.
"""

import re
import string
from typing import Sequence

import numpy as np

ANSWER_KINDS = ("mmlu", "bbh", "truthfulqa", "short", "demo")
UPSTREAM_KINDS = {"mmlu": "mmlu", "bbh": "bbh", "truthfulqa": "truthfulqa", "demo_tasks": "demo", "tulu": "short",
                  "flan": "short", "dolly": "short", "chat": "short", "upstream": "short"}
_BUDGETS = {"mmlu": 8, "bbh": 48, "truthfulqa": 64, "short": 64, "demo": 24}
_STOPS = {"mmlu": ("\n",), "bbh": ("\n\n",), "truthfulqa": ("\n\n",), "short": ("\n\n",), "demo": ("\n",)}
PAPER_BUDGET = 512  # new tokens of the paper's final code (greedy, max_tokens=512)
_ANSWER_IS = re.compile(r"answer is\s*:?\s*|answer\s*:\s*", re.IGNORECASE)
_LETTER = re.compile(r"^\s*\(?([A-J])\)?(?![A-Za-z])")
_CHOICE_TARGET = re.compile(r"^\(([A-Z])\)$")


def answer_kind(upstream_kind: str) -> str:
    """The answer kind of an upstream reader (config matrix.upstream)."""
    if upstream_kind not in UPSTREAM_KINDS:
        raise ValueError(f"matrix.upstream={upstream_kind!r} has no answers to judge; exact match takes "
                         f"{', '.join(UPSTREAM_KINDS)} (or set matrix.answer_kind)")
    return UPSTREAM_KINDS[upstream_kind]


def _check(kind: str) -> None:
    if kind not in ANSWER_KINDS:
        raise ValueError(f"answer kind {kind!r} is not one of {', '.join(ANSWER_KINDS)}")


def max_new_tokens(kind: str) -> int:
    _check(kind)
    return _BUDGETS[kind]


def stop_strings(kind: str) -> tuple[str, ...]:
    _check(kind)
    return _STOPS[kind]


def answer_budget(kind: str, max_positions: int, longest_prompt: int) -> tuple[int, str]:
    """(new tokens, why) of matrix.max_new_tokens = 0: min(PAPER_BUDGET, max_positions -
    longest_prompt), the room the model's positions leave after the longest prompt (in tokens);
    when that is less than the kind's own budget, the kind's budget where it fits the positions
    (the longest prompts then keep their last tokens, models/generate.py)."""
    own = max_new_tokens(kind)
    room = int(max_positions) - int(longest_prompt)
    budget = min(PAPER_BUDGET, room)
    if budget >= own:
        why = ("the paper's budget" if budget == PAPER_BUDGET else
               f"the room after the longest prompt ({longest_prompt} of {max_positions} positions), "
               f"under the paper's {PAPER_BUDGET}")
        return budget, why
    if own < max_positions:
        return own, (f"the answer kind {kind}'s own budget: the longest prompt ({longest_prompt} tokens) leaves "
                     f"{max(room, 0)} of the model's {max_positions} positions, under the paper's {PAPER_BUDGET}")
    budget = max(1, min(room, int(max_positions) - 1))
    return budget, (f"all the model's {max_positions} positions leave (the answer kind {kind}'s {own} and the "
                    f"paper's {PAPER_BUDGET} do not fit)")


def before_blank_line(completion: str) -> str:
    """The text a completion is judged on: before its first blank line ("\n\n")."""
    return completion.split("\n\n")[0]


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _after_answer_is(completion: str) -> str:
    matches = list(_ANSWER_IS.finditer(completion))
    return completion[matches[-1].end():] if matches else completion


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.split("\n", 1)[0].strip() if stripped else ""


def _letter(text: str) -> str | None:
    match = _LETTER.match(text)
    return match.group(1) if match else None


def extract_answer(kind: str, completion: str) -> str:
    """The part of a completion that is compared with the reference (of its text before the
    first blank line)."""
    _check(kind)
    completion = before_blank_line(completion)
    if kind == "mmlu":
        return _letter(_after_answer_is(completion).strip()) or _first_line(completion)
    if kind == "bbh":
        return _first_line(_after_answer_is(completion))
    if kind in ("truthfulqa", "demo"):
        return _first_line(completion)
    return completion.strip()


def _matches(kind: str, completion: str, reference: str) -> bool:
    answer = extract_answer(kind, completion)
    reference = reference.strip()
    if kind == "demo":
        return answer == reference
    if kind == "mmlu" and len(reference) == 1 and reference.upper() in "ABCDEFGHIJ":
        return answer == reference.upper()
    choice = _CHOICE_TARGET.match(reference) if kind == "bbh" else None
    if choice:
        return _letter(answer) == choice.group(1)
    return normalize_answer(answer) == normalize_answer(reference)


def is_correct(kind: str, completion: str, reference: str | Sequence[str]) -> bool:
    """True when the completion answers as the reference (any of a list of references) does."""
    references = [reference] if isinstance(reference, str) else list(reference)
    return any(_matches(kind, completion, r) for r in references)


def correctness(kind: str, completions: Sequence[str], references: Sequence[str | Sequence[str]]) -> np.ndarray:
    """bool [N]: is_correct of each (completion, reference) pair."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions for {len(references)} references")
    return np.asarray([is_correct(kind, c, r) for c, r in zip(completions, references)], bool)
