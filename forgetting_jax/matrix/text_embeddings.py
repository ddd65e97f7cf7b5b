"""A sentence-embedding model's embeddings of the texts of a matrix, for the similarity analysis
(analysis/similarity.py `text_embedding_cosine`: the paper's correlations of forgetting with the
cosine of OpenAI / SentenceBERT embeddings).

The embedder (config.matrix.embedder, or `forgetting-jax analyze --embedder`) is a model directory
or a .gguf file that the project's loader reads (models/loading.py `load_model`,
`load_tokenizer`): a decoder of one of its families (LLaMA, Mistral, Qwen2, OLMo, OLMo-2,
GPT-NeoX/Pythia). Encoder-only models (BERT, SentenceBERT) and embedding APIs are not supported.
A text's embedding is the mean of the embedder's final hidden states over its tokens (score/
scorer.py `Scorer.represent`: packed batches, one compiled shape).

The texts are the matrix's own, tokenized with the embedder's tokenizer (as
matrix/encoder_inputs.py re-reads them for rep_dot's encoder; a conversation is rendered with the
embedder's chat template, or the Tulu one when it has none): the upstream records of
config.matrix as the base model's tokenizer reads them (the demo and lm kinds cut the corpus into
chunks of its tokens), matched to the matrix's columns by id, and, per task, its represented
training examples (matrix/representations.py `represented_examples`: the same seeded subsample of
up to matrix.task_examples that the base model's task representation uses, matched by id). A
task's embedding is the mean of its examples' embeddings. A text the embedder's tokenizer cannot
encode within max_length is left out (with a warning); an upstream example without an embedding,
or a task without any, gets zeros, whose cosines are undefined and left out of the analysis.

  example_text_embeddings  [N, E]   upstream examples (the matrix's columns)
  task_text_embeddings     [M, E]   tasks (the matrix's rows)

Cached by fingerprint, like the base model's representations (process 0 writes, atomically):

  W/matrix/text_embeddings/upstream/<fp>.npz      mean [U, E] of every upstream example of
                                                  config.matrix; fp: the embedder's files, the
                                                  dtype, the examples as its tokenizer encodes them
  W/matrix/text_embeddings/tasks/<task>/<fp>.npz  mean [E], count; fp: the embedder's files, the
                                                  dtype, the task's represented examples
"""

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np

from forgetting_jax.data.records import Example
from forgetting_jax.matrix.store import read_checked, task_filename
from forgetting_jax.utils.fingerprint import fingerprint
from forgetting_jax.utils.io import write_npz
from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.run")

VERSION = 1  # of what a text embedding is; part of every fingerprint
UPSTREAM_ARRAYS = {"mean": ("f", 2)}
TASK_ARRAYS = {"mean": ("f", 1), "count": ("iu", 0)}
MATRIX_ARRAYS = ("example_text_embeddings", "task_text_embeddings")


class TextEmbeddingStore:
    """The cached text embeddings under W/matrix/text_embeddings (see the module docstring)."""

    def __init__(self, matrix_root: str):
        self.root = os.path.join(matrix_root, "text_embeddings")

    def upstream_path(self, fp: str) -> str:
        return os.path.join(self.root, "upstream", fp + ".npz")

    def task_path(self, task: str, fp: str) -> str:
        return os.path.join(self.root, "tasks", task_filename(task), fp + ".npz")

    def upstream(self, fp: str, n: int) -> np.ndarray | None:
        data = read_checked(self.upstream_path(fp), fp, UPSTREAM_ARRAYS)
        return None if data is None or data["mean"].shape[0] != n else data["mean"]

    def write_upstream(self, fp: str, mean_NxE: np.ndarray) -> None:
        if is_main():
            write_npz(self.upstream_path(fp), mean=np.asarray(mean_NxE, np.float32), fingerprint=np.asarray(fp))

    def task(self, task: str, fp: str) -> tuple[np.ndarray, int] | None:
        data = read_checked(self.task_path(task, fp), fp, TASK_ARRAYS)
        return None if data is None else (data["mean"], int(data["count"]))

    def write_task(self, task: str, fp: str, mean_E: np.ndarray, count: int) -> None:
        if is_main():
            write_npz(self.task_path(task, fp), mean=np.asarray(mean_E, np.float32),
                      count=np.asarray(count, np.int32), fingerprint=np.asarray(fp))


@dataclasses.dataclass
class Embedder:
    """The embedding model: its directory, fingerprint and tokenizer; its weights are loaded on
    first use, in `dtype`, on `mesh` (rows of the packed batches over its data axis)."""

    model_dir: str
    fingerprint: str
    tokenizer: Any
    dtype: str = "float32"
    mesh: Any = None
    tokens_per_batch: int = 16384
    _scorer: Any = None

    @classmethod
    def load(cls, path: str, workdir: str, dtype: str = "float32", mesh: Any = None,
             tokens_per_batch: int = 16384) -> "Embedder":
        """The embedder at `path` (a model directory, or a .gguf file converted once into W/gguf/);
        ValueError when there is no such directory."""
        from forgetting_jax.models.gguf_source import workspace_model_source
        from forgetting_jax.train.base import tokenizer as cached_tokenizer
        from forgetting_jax.utils.fingerprint import file_fingerprint

        model_dir = workspace_model_source(path, workdir)
        if not os.path.isdir(model_dir):
            raise ValueError(f"embedder {path!r}: no such model directory or .gguf file")
        return cls(model_dir, file_fingerprint(model_dir), cached_tokenizer(model_dir), dtype, mesh,
                   int(tokens_per_batch))

    def key(self, examples: Sequence[Example], **more: Any) -> str:
        """The fingerprint of these examples' embeddings by this embedder."""
        from forgetting_jax.train.inputs import examples_fingerprint

        return fingerprint({"text_embeddings": VERSION, "embedder": self.fingerprint, "dtype": self.dtype,
                            "examples": examples_fingerprint(list(examples)), **more})

    def embed(self, examples: Sequence[Example], what: str) -> np.ndarray:
        """Mean-pooled final hidden states [n, E] of `examples` (float32)."""
        if self._scorer is None:
            from forgetting_jax.models.loading import load_model
            from forgetting_jax.score.scorer import Scorer

            config, params = load_model(self.model_dir, param_dtype=self.dtype, dtype=self.dtype)
            self._scorer = Scorer(config.replace(remat_policy="none"), params, mesh=self.mesh)
        mean, _, stats = self._scorer.represent([e.pair for e in examples], tokens_per_batch=self.tokens_per_batch)
        log.info("embedded %d %s with the embedder %s, %.0f tokens/s", len(examples), what, self.model_dir,
                 stats.tokens_per_second)
        return mean

    @property
    def width(self) -> int:
        from forgetting_jax.models.config import load_hf_config

        return int(load_hf_config(self.model_dir)[0].hidden_size)


def _encoded(embedder: Embedder, records: Sequence[dict], max_length: int, what: str) -> dict[str, Example]:
    """{id: Example} of `records` encoded by the embedder's tokenizer; a record it cannot encode
    is left out (counted in the log; its embedding is then zero, its cosines undefined)."""
    from forgetting_jax.data.examples import encode_records

    return {e.id: e for e in encode_records(embedder.tokenizer, records, max_length, skip_bad=True, source=what)}


def upstream_text_embeddings(embedder: Embedder, config: Any, workdir: str, example_ids: Sequence[str],
                             base_tokenizer: Any) -> np.ndarray:
    """example_text_embeddings [N, E] of the upstream examples `example_ids` (the matrix's
    columns): the texts of config.matrix's upstream records as the base tokenizer reads them
    (the demo and lm kinds chunk the corpus by its tokens), encoded by the embedder's; cached.
    ValueError naming a column that is not one of them."""
    from forgetting_jax.matrix.upstream import load_upstream_records

    records = load_upstream_records(config.matrix, base_tokenizer)
    ids = {r["id"] for r in records}
    missing = [i for i in example_ids if i not in ids]
    if missing:
        raise ValueError(f"{len(missing)} column(s) of the matrix are not upstream examples of this config's matrix "
                         f"settings (e.g. {missing[0]!r}); pass the --config the matrix was built with")
    by_id = _encoded(embedder, records, int(config.matrix.max_length), "the upstream examples (embedder)")
    examples = [by_id[r["id"]] for r in records if r["id"] in by_id]
    store = TextEmbeddingStore(os.path.join(workdir, "matrix"))
    fp = embedder.key(examples)
    mean = store.upstream(fp, len(examples))
    if mean is None:
        mean = embedder.embed(examples, "upstream examples")
        store.write_upstream(fp, mean)
    row = {e.id: i for i, e in enumerate(examples)}
    out = np.zeros((len(example_ids), mean.shape[1]), np.float32)
    for j, i in enumerate(example_ids):
        if i in row:
            out[j] = mean[row[i]]
    return out


def task_text_embeddings(embedder: Embedder, config: Any, workdir: str, tasks: Sequence[str],
                         task_train: dict[str, Sequence[Example]]) -> np.ndarray:
    """task_text_embeddings [M, E] of `tasks` (the matrix's rows): the mean embedding of each one's
    represented training examples (task_train[task]: its training examples as the base tokenizer
    encodes them; the same seeded subsample as its representation, matched by id among the
    task's examples as the embedder's tokenizer encodes them), cached per task; the tasks not
    cached are embedded in one pass."""
    from forgetting_jax.matrix.representations import represented_examples
    from forgetting_jax.train.inputs import task_examples

    s = int(config.matrix.task_examples)
    store = TextEmbeddingStore(os.path.join(workdir, "matrix"))
    chosen = {}
    for task in tasks:
        by_id = {e.id: e for e in task_examples(config.data, task, embedder.tokenizer)["train"]}
        ids = [e.id for e in represented_examples(task_train[task], s)]
        chosen[task] = [by_id[i] for i in ids if i in by_id]
        if len(chosen[task]) < len(ids):
            log.warning("task %s: %d of its %d represented training examples do not fit the embedder's tokens "
                        "(data.max_length=%d); its text embedding is the mean of the others'", task,
                        len(ids) - len(chosen[task]), len(ids), config.data.max_length)
    keys = {task: embedder.key(chosen[task], max_examples=s) for task in tasks}
    found = {task: store.task(task, keys[task]) for task in tasks}
    todo = [task for task in tasks if found[task] is None and chosen[task]]
    if todo:
        mean = embedder.embed([e for task in todo for e in chosen[task]], f"training examples of {len(todo)} task(s)")
        start = 0
        for task in todo:
            count = len(chosen[task])
            found[task] = (mean[start:start + count].mean(0).astype(np.float32), count)
            start += count
            store.write_task(task, keys[task], *found[task])
    width = next((v[0].shape[0] for v in found.values() if v is not None), None) or embedder.width
    for task in tasks:
        if found[task] is None:  # no training example: a zero embedding (undefined cosines)
            found[task] = (np.zeros(width, np.float32), 0)
    return np.stack([found[task][0] for task in tasks]).astype(np.float32)


def text_embedding_arrays(config: Any, workdir: str, tasks: Sequence[str], example_ids: Sequence[str],
                          embedder: str | None = None, mesh: Any = None, base: Any = None,
                          task_train: dict[str, Sequence[Example]] | None = None) -> dict[str, np.ndarray]:
    """The matrix arrays (MATRIX_ARRAYS) of the rows `tasks` and columns `example_ids` of a matrix
    built under `config` in `workdir`, by the embedder `embedder` (None: config.matrix.embedder).
    mesh: the scoring mesh (None: a data mesh over the devices of config.mesh); base: the base
    model (train.base.BaseModel; None: the workspace's, whose tokenizer reads the texts as the
    matrix did); task_train: {task: its training examples} as the base tokenizer encodes them
    (None: read again)."""
    from forgetting_jax.train.base import base_model
    from forgetting_jax.train.base import tokenizer as cached_tokenizer

    path = config.matrix.embedder if embedder is None else embedder
    if not path:
        raise ValueError("no embedder: set matrix.embedder (or pass --embedder)")
    if mesh is None:
        from forgetting_jax.score.scorer import data_mesh
        from forgetting_jax.train.mesh import make_mesh

        mesh = data_mesh(list(make_mesh(config.mesh).devices.flat))
    model = Embedder.load(path, workdir, config.matrix.dtype, mesh, config.matrix.tokens_per_batch)
    base_tokenizer = cached_tokenizer((base or base_model(config, workdir)).tokenizer_dir)
    if task_train is None:
        from forgetting_jax.train.inputs import task_examples

        task_train = {task: task_examples(config.data, task, base_tokenizer)["train"] for task in tasks}
    return {"example_text_embeddings": upstream_text_embeddings(model, config, workdir, example_ids, base_tokenizer),
            "task_text_embeddings": task_text_embeddings(model, config, workdir, tasks, task_train)}
