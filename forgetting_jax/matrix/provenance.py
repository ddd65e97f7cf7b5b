"""Where a matrix's columns and base scores come from, recorded in the matrix file so that a later
command (`forgetting-jax forecast`) can score a few of its upstream examples under another model
and check that model against the matrix's base.

Fields of the matrix file (strings, no upstream axis):

  upstream_settings      JSON: the matrix settings that read the upstream examples (upstream,
                         upstream_path made absolute, upstream_kwargs, num_upstream, seed,
                         max_length, upstream_tasks); `upstream_settings(data)` gives them back
  base_fingerprint       the base model's fingerprint (train/base.py; fine-tuning runs of this
                         project record it as their run.json's inputs.base)
  base_model_dir         the base model's HF directory, relative to the workspace that built the
                         matrix (absolute when it lies outside), so a moved workspace keeps its bytes
  tokenizer_fingerprint  the base tokenizer's vocabulary and special tokens (`tokenizer_fingerprint`)
  scoring_dtype          matrix.dtype: the dtype every row was scored in
"""

import dataclasses
import json
import os
from typing import Any

import numpy as np

from forgetting_jax.utils.fingerprint import fingerprint

FIELDS = ("upstream_settings", "base_fingerprint", "base_model_dir", "tokenizer_fingerprint", "scoring_dtype")
UPSTREAM_FIELDS = ("upstream", "upstream_path", "upstream_kwargs", "num_upstream", "seed", "max_length",
                   "upstream_tasks")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A fingerprint of a tokenizer's vocabulary (token -> id) and its special tokens: two
    tokenizers with the same one encode every text alike."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    return fingerprint({"vocab": vocab, "special": special})


def provenance_arrays(config: Any, up: Any, workdir: str) -> dict[str, np.ndarray]:
    """The FIELDS of the matrix of `config` built over `up` (matrix/upstream.py Upstream) in the
    workspace `workdir`."""
    from forgetting_jax.train.base import tokenizer as cached_tokenizer

    matrix = config.matrix
    settings = {key: getattr(matrix, key) for key in UPSTREAM_FIELDS}
    if settings["upstream_path"] and os.path.exists(settings["upstream_path"]):
        settings["upstream_path"] = os.path.abspath(settings["upstream_path"])
    settings["upstream_kwargs"] = dict(settings["upstream_kwargs"] or {})
    settings["upstream_tasks"] = list(settings["upstream_tasks"])
    return {"upstream_settings": np.asarray(json.dumps(settings, sort_keys=True)),
            "base_fingerprint": np.asarray(str(up.base.fingerprint)),
            "base_model_dir": np.asarray(_within(up.base.model_dir, workdir)),
            "tokenizer_fingerprint": np.asarray(tokenizer_fingerprint(cached_tokenizer(up.base.tokenizer_dir))),
            "scoring_dtype": np.asarray(str(matrix.dtype))}


def _within(path: str, workdir: str) -> str:
    """`path` relative to `workdir` when it lies inside it, else absolute."""
    path, workdir = os.path.abspath(path), os.path.abspath(workdir)
    inside = os.path.commonpath([path, workdir]) == workdir
    return os.path.relpath(path, workdir) if inside else path


def upstream_settings(data: dict, path: str = "the matrix file") -> Any:
    """The matrix settings (experiment.MatrixSettings) that read the matrix's upstream examples;
    ValueError naming the file when it does not record them."""
    from forgetting_jax.experiment import MatrixSettings

    if "upstream_settings" not in data:
        raise ValueError(f"{path}: no field 'upstream_settings': the file does not record how its upstream examples "
                         "are read (a matrix written by `forgetting-jax run` records it); rebuild it with `run`")
    try:
        settings = json.loads(str(data["upstream_settings"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: field 'upstream_settings' is not JSON ({err})") from err
    unknown = sorted(set(settings) - set(UPSTREAM_FIELDS))
    if unknown:
        raise ValueError(f"{path}: field 'upstream_settings' has unknown key(s) {', '.join(unknown)}")
    settings["upstream_tasks"] = tuple(settings.get("upstream_tasks", ()))
    return dataclasses.replace(MatrixSettings(), **settings)
