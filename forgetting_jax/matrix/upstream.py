"""What every row of the matrix shares: the base model, the N upstream examples and the base
model's scores of them (and, with matrix.metric=exact_match, its answers).

`prepare_upstream` builds it once per run: the base model (pre-trained or imported when needed,
train/base.py), the upstream examples (read and tokenized once per process while their file is
unchanged), and their base scores, computed once and then read from W/matrix/base_nll/<fp>.npz.
The result is a frozen `Upstream`. The base weights are held on the devices only inside a
`BaseWeights` context (`Upstream.base_weights()`): while the base scores, answers or
representations are computed, never while tasks fine-tune.
"""

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import Experiment
from forgetting_jax.matrix.model_files import check_base_model
from forgetting_jax.matrix.store import MatrixStore, upstream_tokens_fingerprint
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.loading import load_model
from forgetting_jax.score.scorer import Scorer, data_mesh
from forgetting_jax.train.base import base_model
from forgetting_jax.train.base import tokenizer as cached_tokenizer
from forgetting_jax.train.mesh import make_mesh
from forgetting_jax.utils.file_cache import FileCache
from forgetting_jax.utils.fingerprint import fingerprint

log = logging.getLogger("forgetting_jax.run")

_UPSTREAM = FileCache(size=1)  # one upstream set at a time: a run holds one


def load_upstream(matrix: Any, tokenizer) -> list[Example]:
    """The upstream examples of `matrix` (experiment.MatrixSettings), in a stable order; read and
    tokenized once per process for the same settings, tokenizer and file: a reused `run`,
    `replay` or the next command of one process does not read them again."""
    return list(_upstream_cached(matrix, tokenizer)[0])


def load_upstream_records(matrix: Any, tokenizer) -> list[dict]:
    """The records of `load_upstream`'s examples, one each in the same order (their prompts and
    reference answers: the exact-match metric, matrix/answers.py)."""
    return list(_upstream_cached(matrix, tokenizer)[1])


def _upstream_cached(matrix: Any, tokenizer) -> tuple[list[Example], list[dict]]:
    key = (repr(matrix), getattr(tokenizer, "name_or_path", id(tokenizer)), len(tokenizer))
    return _UPSTREAM.get(key, matrix.upstream_path, lambda: _read_upstream(matrix, tokenizer))


def _read_upstream(matrix: Any, tokenizer) -> tuple[list[Example], list[dict]]:
    from forgetting_jax.data.by_kind import read_kind
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.splits import subsample

    n = int(matrix.num_upstream) or None
    max_length = int(matrix.max_length)
    kind, path = matrix.upstream, matrix.upstream_path
    if kind == "demo":
        from forgetting_jax.data.demo import corpus_path
        from forgetting_jax.data.demo.corpus import demo_upstream_records

        records = demo_upstream_records(tokenizer, max_length, n, int(matrix.seed))
        return encode_records(tokenizer, records, max_length, source=corpus_path()), records
    if kind == "demo_tasks":
        from forgetting_jax.data.demo.tasks import suite_records

        if not matrix.upstream_tasks:
            raise ValueError("matrix.upstream=demo_tasks needs matrix.upstream_tasks (tasks of the bundled suite)")
        records = subsample(suite_records(matrix.upstream_tasks, "train"), n, int(matrix.seed))
        return encode_records(tokenizer, records, max_length, source="the demo task suite"), records
    if not path:
        raise ValueError(f"matrix.upstream={kind!r} needs matrix.upstream_path")
    kwargs = {k: v for k, v in dict(matrix.upstream_kwargs or {}).items() if v is not None}
    records = read_kind(kind, path, field="matrix.upstream", kwargs=kwargs, tokenizer=tokenizer,
                        max_length=max_length, check_kwargs=kind not in ("lm", "chat"))
    records = subsample(records, n, int(matrix.seed))
    return encode_records(tokenizer, records, max_length, source=path), records


class BaseWeights:
    """The base model's weights in the scoring dtype on the scoring mesh, as a Scorer: loaded on
    first use, released when the `with` block ends."""

    def __init__(self, base: Any, scoring_config: ModelConfig, scoring_mesh: Mesh | None):
        self._base, self._config, self._mesh = base, scoring_config, scoring_mesh
        self._scorer: Scorer | None = None

    def scorer(self) -> Scorer:
        if self._scorer is None:
            check_base_model(self._base)
            dtype = self._config.param_dtype
            _, params = load_model(self._base.model_dir, param_dtype=dtype, dtype=dtype)
            self._scorer = Scorer(self._config, params, mesh=self._mesh)
        return self._scorer

    def __enter__(self) -> "BaseWeights":
        return self

    def __exit__(self, *exc) -> None:
        self._scorer = None


@dataclasses.dataclass(frozen=True)
class Answering:
    """matrix.metric=exact_match: the upstream prompts every model answers, and the base's answers."""

    answers: Any  # matrix/answers.AnswerSet
    store: Any  # its matrix/answers.AnswerStore
    base_correct: np.ndarray  # [N] bool: the base model's answers are right
    tokenizer: Any  # the base's tokenizer (prompts and answers)
    eos_ids: tuple[int, ...]  # the token ids that end an answer
    generate_batch_size: int


@dataclasses.dataclass(frozen=True)
class Upstream:
    """The base model and the upstream examples it scored: what every row of the matrix shares."""

    base: Any  # train.base.BaseModel
    examples: list[Example]
    base_nll: np.ndarray  # [N]
    scoring: dict  # the rows' share of their fingerprints: scoring dtype, upstream set
    store: MatrixStore
    mesh: Mesh  # the training mesh
    scoring_mesh: Mesh | None  # data-parallel over the training mesh's devices (None: one device)
    scoring_config: ModelConfig  # the base's architecture in matrix.dtype: every model is scored with it
    base_scores_fp: str  # the fingerprint of the base scores (of base_nll)
    base_scores_reused: bool
    tokens_per_batch: int  # matrix.tokens_per_batch: token slots per scoring call
    answering: Answering | None = None  # matrix.metric=exact_match

    def base_weights(self) -> BaseWeights:
        """A context holding the base weights for scoring or representing (see BaseWeights)."""
        return BaseWeights(self.base, self.scoring_config, self.scoring_mesh)


def prepare_upstream(config: Experiment, workdir: str, mesh: Mesh | None = None) -> Upstream:
    """The base model (trained or imported when needed) and its scores of the upstream examples
    (computed once, then read from W/matrix/base_nll/<fp>.npz); with matrix.representations, the
    upstream examples' representations too (from the same pass when both are new)."""
    from forgetting_jax.matrix import representations

    matrix = config.matrix
    store = MatrixStore(os.path.join(workdir, "matrix"))
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    scoring_mesh = data_mesh(list(mesh.devices.flat))
    base = base_model(config, workdir, mesh)
    # Every model of the matrix is scored with this one config (one compiled scoring step).
    scoring_config = base.config.replace(param_dtype=matrix.dtype, dtype=matrix.dtype, remat_policy="none")
    tokenizer = cached_tokenizer(base.tokenizer_dir)
    examples = load_upstream(matrix, tokenizer)
    if not examples:
        raise ValueError("no upstream examples: check matrix.upstream and matrix.upstream_path")
    example_ids = [e.id for e in examples]
    scoring = {"dtype": matrix.dtype, "upstream": upstream_tokens_fingerprint(example_ids, [e.ids for e in examples])}
    base_fp = fingerprint({"base": base.fingerprint, **scoring})
    reps = representations.RepresentationStore(store.root) if matrix.representations else None
    reps_fp = representations.upstream_representation_key(base_fp)
    cached = store.base(base_fp, len(examples))
    with BaseWeights(base, scoring_config, scoring_mesh) as weights:
        if cached is not None:
            log.info("base scores of %d upstream examples reused", len(examples))
            base_nll = cached["nll"]
        else:
            pairs = [e.pair for e in examples]
            tokens_per_batch = int(matrix.tokens_per_batch)
            if reps is not None and reps.upstream(reps_fp, len(examples)) is None:
                # the base scores and the representations from the same packed batches, one forward pass
                base_nll, count, mean, last, stats = weights.scorer().score_and_represent(
                    pairs, tokens_per_batch=tokens_per_batch)
                reps.write_upstream(reps_fp, mean, last)
                reps = None  # done: every process holds them (none re-reads a file process 0 may be writing)
            else:
                base_nll, count, stats = weights.scorer().score(pairs, tokens_per_batch=tokens_per_batch)
            log.info("scored %d upstream examples with the base model: mean nll %.4f, %.0f tokens/s", len(examples),
                     float(np.nanmean(base_nll)), stats.tokens_per_second)
            store.write_base(base_fp, example_ids, base_nll, count)
        answering = None
        if matrix.metric == "exact_match":
            answering = _base_answers(matrix, tokenizer, base, scoring_config, scoring_mesh, base_fp, len(examples),
                                      store, weights)
        up = Upstream(base, examples, base_nll, scoring, store, mesh, scoring_mesh, scoring_config, base_fp,
                      cached is not None, int(matrix.tokens_per_batch), answering)
        if reps is not None:
            representations.upstream_representation(up, weights)  # read from the cache, or computed now
    return up


def _base_answers(matrix: Any, tokenizer, base: Any, scoring_config: ModelConfig, scoring_mesh: Mesh | None,
                  base_fp: str, n: int, store: MatrixStore, weights: BaseWeights) -> Answering:
    """matrix.metric=exact_match: the answer set, and the base model's answers (read from the
    answer store, or generated now)."""
    from forgetting_jax.matrix.answers import (BASE, AnswerStore, answer, answer_set, answers_fingerprint,
                                               kept_columns)
    from forgetting_jax.models.generate import eos_token_ids

    if jax.process_count() > 1:
        raise ValueError("matrix.metric=exact_match runs in one process (one host, any number of its devices); "
                         f"this run has {jax.process_count()} processes")
    answers = answer_set(matrix, tokenizer, load_upstream_records(matrix, tokenizer),
                         scoring_config.max_position_embeddings)
    answer_store = AnswerStore(store.root)
    eos_ids = tuple(eos_token_ids(scoring_config, tokenizer, base.model_dir))
    batch_size = int(matrix.generate_batch_size)
    fp = answers_fingerprint(base_fp, answers)
    base_correct = answer_store.read(BASE, fp, n)
    if base_correct is not None:
        log.info("base model's answers to %d upstream prompts reused: %.1f%% right", n,
                 100 * float(base_correct.mean()))
    else:
        base_correct, completions = answer(scoring_config, weights.scorer().params, answers, tokenizer, eos_ids,
                                           scoring_mesh, batch_size, "the base model")
        answer_store.write(BASE, fp, base_correct, completions)
    kept_columns(base_correct, matrix.em_columns)  # fails now, before any fine-tuning, when too few are right
    return Answering(answers, answer_store, base_correct, tokenizer, eos_ids, batch_size)
