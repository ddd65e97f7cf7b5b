"""What rep_dot's trainable encoder reads from a workspace (predict/rep_dot_training.py
`EncoderInputs`): the encoder model, and the matrix's upstream examples and each row's training
examples tokenized by the encoder's tokenizer.

The encoder is predict.rep_dot_model when set (any HF directory: a 1B model may forecast a 7B
model's matrix, as in the paper), else the workspace's base model. The upstream examples are
config.matrix's, matched to the matrix file's columns by id; each row's examples are the ones its
frozen representation uses (matrix/representations.py `represented_examples`: up to
matrix.task_examples of the task's training examples).
"""

import os
from typing import Any, Sequence

from forgetting_jax.experiment import Experiment
from forgetting_jax.matrix.representations import represented_examples
from forgetting_jax.matrix.upstream import load_upstream
from forgetting_jax.models.gguf_source import workspace_model_source
from forgetting_jax.predict.rep_dot_training import EncoderInputs
from forgetting_jax.train.base import base_model
from forgetting_jax.train.base import tokenizer as cached_tokenizer
from forgetting_jax.train.inputs import examples_fingerprint, task_examples
from forgetting_jax.utils.fingerprint import file_fingerprint, fingerprint


def encoder_inputs(config: Experiment, workdir: str, tasks: Sequence[str], example_ids: Sequence[str],
                   model_dir: str | None = None) -> EncoderInputs:
    """The EncoderInputs of a matrix with rows `tasks` and columns `example_ids` built under
    `config` in `workdir`, with the encoder `model_dir` (None: config.predict.rep_dot_model, whose
    "" is the base model); ValueError naming what does not match."""
    model_dir = config.predict.rep_dot_model if model_dir is None else model_dir
    if model_dir:
        model_dir = workspace_model_source(model_dir, workdir)
        if not os.path.isdir(model_dir):
            raise ValueError(f"predict.rep_dot_model={model_dir!r}: no such model directory")
        tokenizer_dir, model_fp = model_dir, file_fingerprint(model_dir)
    else:
        base = base_model(config, workdir)
        model_dir, tokenizer_dir, model_fp = base.model_dir, base.tokenizer_dir, base.fingerprint
    tokenizer = cached_tokenizer(tokenizer_dir)
    by_id = {e.id: e for e in load_upstream(config.matrix, tokenizer)}
    missing = [i for i in example_ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} column(s) of the matrix are not upstream examples of this config's matrix "
                         f"settings (e.g. {missing[0]!r}); pass the --config the matrix was built with")
    upstream = [by_id[i] for i in example_ids]
    rows: list[Any] = []
    for task in tasks:
        train = task_examples(config.data, task, tokenizer)["train"]
        rows.append(represented_examples(train, int(config.matrix.task_examples)))
    data_fp = fingerprint({"upstream": examples_fingerprint(upstream),
                           "tasks": [examples_fingerprint(list(r)) for r in rows]})
    return EncoderInputs(model_dir=model_dir, model_fingerprint=model_fp,
                         upstream=tuple(e.pair for e in upstream),
                         task_examples=tuple(tuple(e.pair for e in r) for r in rows), data_fingerprint=data_fp,
                         workdir=workdir, mesh=config.mesh, dtype=config.model.dtype,
                         tokens_per_batch=int(config.matrix.tokens_per_batch))
