"""The held-out examples of a replay experiment: never replayed, they measure its forgetting.

  split  (default) a seeded draw of H of the scored upstream examples (H: replay/protocol.py); the
         other scored upstream examples are the replay pool
  file   replay.heldout_file: examples of their own, read in the format of matrix.upstream (lm for
         the demo corpus, chat for upstream=demo_tasks) with matrix.upstream_kwargs, scored by the
         base model once (W/matrix/base_nll/<fp>.npz, as any upstream set); every scored upstream
         example may then be replayed (the final code's instruct runs: separate held-out files)

With matrix.metric=exact_match the held-out prompts are answered too (their AnswerSet: the split's
share of the upstream answer set, or the file's own), so a run's exact-match drop on them is
measured as well as its NLL forgetting.

Rows of the replay runs live in W/replay/heldout (MatrixStore; answers in W/replay/heldout/answers).
"""

import dataclasses
import logging
import os
from typing import Any

import numpy as np

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import Experiment
from forgetting_jax.matrix.store import MatrixStore, upstream_tokens_fingerprint
from forgetting_jax.matrix.upstream import Answering, Upstream
from forgetting_jax.utils.fingerprint import fingerprint

log = logging.getLogger("forgetting_jax.replay")


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The held-out set of one replay experiment."""

    examples: list[Example]
    base_nll: np.ndarray  # [H]
    scoring: dict  # the held-out rows' share of their fingerprints
    store: MatrixStore  # W/replay/heldout
    pool: np.ndarray  # [N] bool: upstream examples that may be replayed
    indices: np.ndarray | None  # [H] into the upstream examples (a split), None (a file)
    answering: Answering | None  # matrix.metric=exact_match: the held-out prompts and the base's answers
    source: str  # "split" or the file

    def describe(self) -> dict:
        return {"source": self.source, "size": len(self.examples)}


def split_upstream(base_nll_N: np.ndarray, num_heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out indices [H] sorted, pool mask [N]): a seeded draw of H scored examples; the pool
    is the other scored examples."""
    scored = np.flatnonzero(np.isfinite(base_nll_N))
    if not 0 < num_heldout < len(scored):
        raise ValueError(f"replay.num_heldout={num_heldout}: must be between 1 and the {len(scored)} scored "
                         "upstream examples minus the replay pool")
    heldout = np.sort(np.random.Generator(np.random.PCG64([seed, 1])).choice(scored, num_heldout, replace=False))
    pool = np.isfinite(base_nll_N)
    pool[heldout] = False
    return heldout, pool


def _answer_subset(answering: Answering, indices: np.ndarray, root: str) -> Answering:
    from forgetting_jax.matrix.answers import AnswerStore

    a = answering.answers
    pick = [int(i) for i in indices]
    answers = dataclasses.replace(
        a, prompts=tuple(a.prompts[i] for i in pick), prompt_ids=tuple(a.prompt_ids[i] for i in pick),
        references=tuple(a.references[i] for i in pick),
        fingerprint=fingerprint({"answers": a.fingerprint, "indices": fingerprint(np.asarray(pick, np.int64))}))
    return dataclasses.replace(answering, answers=answers, store=AnswerStore(root),
                               base_correct=np.asarray(answering.base_correct)[indices])


def heldout_split(up: Upstream, num_heldout: int, seed: int, workdir: str) -> HeldOut:
    """The split held-out set (see the module docstring)."""
    indices, pool = split_upstream(up.base_nll, num_heldout, seed)
    examples = [up.examples[j] for j in indices]
    store = MatrixStore(os.path.join(workdir, "replay", "heldout"))
    scoring = {"dtype": up.scoring["dtype"],
               "upstream": upstream_tokens_fingerprint([e.id for e in examples], [e.ids for e in examples])}
    answering = None if up.answering is None else _answer_subset(up.answering, indices, store.root)
    return HeldOut(examples, up.base_nll[indices], scoring, store, pool, indices, answering, "split")


def heldout_file_kind(upstream: str) -> str:
    """The format a held-out file is read in: matrix.upstream's, lm for the demo corpus, chat for
    the demo task suite."""
    return {"demo": "lm", "demo_tasks": "chat"}.get(upstream, upstream)


def heldout_from_file(config: Experiment, workdir: str, up: Upstream, path: str) -> HeldOut:
    """The held-out set of replay.heldout_file (see the module docstring)."""
    from forgetting_jax.matrix.upstream import prepare_upstream

    if not os.path.isfile(path):
        raise ValueError(f"replay.heldout_file {path!r}: no such file")
    matrix = dataclasses.replace(config.matrix, upstream=heldout_file_kind(config.matrix.upstream),
                                 upstream_path=path, num_upstream=0, representations=False)
    held = prepare_upstream(dataclasses.replace(config, matrix=matrix), workdir, up.mesh)
    store = MatrixStore(os.path.join(workdir, "replay", "heldout"))
    answering = held.answering
    if answering is not None:
        from forgetting_jax.matrix.answers import AnswerStore

        answering = dataclasses.replace(answering, store=AnswerStore(store.root))
    pool = np.isfinite(up.base_nll)
    overlap = {e.id for e in held.examples} & {e.id for e in up.examples}
    if overlap:
        log.warning("replay.heldout_file %s: %d of its example ids are upstream examples too (e.g. %s); they are "
                    "not replayed", path, len(overlap), sorted(overlap)[0])
        pool &= np.asarray([e.id not in overlap for e in up.examples])
    log.info("replay: %d held-out examples from %s (base mean NLL %.4f)", len(held.examples), path,
             float(np.nanmean(held.base_nll)))
    return HeldOut(held.examples, held.base_nll, held.scoring, store, pool, None, answering, path)


def heldout_set(config: Experiment, workdir: str, up: Upstream, num_heldout: int) -> HeldOut:
    """replay.heldout_file's held-out set when set, else the split of `num_heldout`."""
    if config.replay.heldout_file:
        return heldout_from_file(config, workdir, up, str(config.replay.heldout_file))
    return heldout_split(up, num_heldout, int(config.replay.seed), workdir)


def em_drop(heldout: HeldOut, correct_H: Any) -> float:
    """The share of the held-out examples the base model answers right that a model answers wrong."""
    before = np.asarray(heldout.answering.base_correct, bool)
    if not before.any():
        return float("nan")
    return float((before & ~np.asarray(correct_H, bool)).sum() / before.sum())
