"""Replay weights from a file: what `forgetting-jax forecast` found, replayed on the user's runs.

replay.weights_file names a forecast file (F.jsonl of `forgetting-jax forecast`: one JSON object
per line with at least "id" and "replay_weight", any other fields ignored). `{task}` in the path
is replaced by the task's name, so one setting serves every test task of the replay experiment
(W/forecasts/{task}.jsonl). It is used by

  - the replay experiment's strategy `forecast` (replay/experiment.py): replay by the file's
    weights, restricted to the replay pool (held-out examples never replayed);
  - `forgetting-jax finetune` with replay.weights_file set: the task fine-tuned with replay at
    replay.ratio by the file's weights, under replay.protocol's step count (`forecast_mixture`).

An upstream example is drawn with probability proportional to its weight (the sampler's logits are
log(weight)); examples with weight 0 or absent from the file are never replayed. The file's
content fingerprint is part of the run's fingerprint, so a changed file is a new run.
"""

import json
import math
import os
from typing import Any, Sequence

import numpy as np

from forgetting_jax.utils.fingerprint import fingerprint


class WeightsFileError(ValueError):
    """A replay weights file that cannot be used; the message names the file and line."""


def weights_path(template: str, task: str) -> str:
    """replay.weights_file for `task` ({task} replaced by its name)."""
    return template.replace("{task}", task)


def read_weights(path: str) -> tuple[dict[str, float], str]:
    """({upstream id: replay weight}, the file's content fingerprint) of a forecast file."""
    if not os.path.isfile(path):
        raise WeightsFileError(f"replay.weights_file {path!r}: no such file (a forecast file of "
                               "`forgetting-jax forecast --output=F.jsonl`)")
    weights: dict[str, float] = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise WeightsFileError(f"{where}: not a JSON object ({err.msg})") from err
        if not isinstance(record, dict):
            raise WeightsFileError(f"{where}: not a JSON object")
        for field in ("id", "replay_weight"):
            if field not in record:
                raise WeightsFileError(f"{where}: no field {field!r} (a forecast line has id, predicted, rank, "
                                       "replay_weight)")
        key, weight = str(record["id"]), record["replay_weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise WeightsFileError(f"{where}: field 'replay_weight' must be a finite number >= 0, got {weight!r}")
        if key in weights:
            raise WeightsFileError(f"{where}: id {key!r} appears twice")
        weights[key] = float(weight)
    if not weights:
        raise WeightsFileError(f"{path}: no lines")
    if not any(w > 0 for w in weights.values()):
        raise WeightsFileError(f"{path}: every replay_weight is 0")
    return weights, fingerprint(text)


def weight_logits(path: str, example_ids: Sequence[str], allowed_N: np.ndarray | None = None
                  ) -> tuple[np.ndarray, str]:
    """(log weight per upstream example [N] float64, -inf where the file gives it no weight or it is
    not allowed; the file's fingerprint). WeightsFileError when no allowed example has a weight."""
    weights, content = read_weights(path)
    w = np.asarray([weights.get(str(i), 0.0) for i in example_ids], np.float64)
    if allowed_N is not None:
        w = np.where(np.asarray(allowed_N, bool), w, 0.0)
    if not (w > 0).any():
        known = sum(str(i) in weights for i in example_ids)
        raise WeightsFileError(f"{path}: no upstream example that may be replayed has a weight ({known} of the "
                               f"{len(example_ids)} upstream ids are in the file): is it a forecast of this "
                               "matrix's upstream examples?")
    with np.errstate(divide="ignore"):
        return np.log(w), content


def forecast_mixture(config: Any, workdir: str, task: str, base: Any) -> Any:
    """The replay mixture of `forgetting-jax finetune --task=TASK` with replay.weights_file: the
    upstream examples of config.matrix (tokenized by the base's tokenizer), replayed at
    replay.ratio by the file's weights, the run's steps by replay.protocol."""
    from forgetting_jax.matrix.upstream import load_upstream
    from forgetting_jax.matrix.store import upstream_tokens_fingerprint
    from forgetting_jax.replay.mixture import ReplayMixture
    from forgetting_jax.replay.protocol import protocol
    from forgetting_jax.replay.sampler import ReplaySchedule
    from forgetting_jax.replay.strategies import task_code
    from forgetting_jax.train.base import tokenizer as cached_tokenizer

    rc = config.replay
    path = weights_path(str(rc.weights_file), task)
    examples = load_upstream(config.matrix, cached_tokenizer(base.tokenizer_dir))
    if not examples:
        raise ValueError("no upstream examples to replay: check matrix.upstream and matrix.upstream_path")
    logits, content = weight_logits(path, [e.id for e in examples])
    seed = [int(rc.seed), task_code(task)]
    inputs = {"strategy": "forecast", "seed": int(rc.seed), "weights_file": content,
              "upstream": upstream_tokens_fingerprint([e.id for e in examples], [e.ids for e in examples])}
    return ReplayMixture(examples, ReplaySchedule(logits, seed), rc.ratio, inputs, f"replay by {path}",
                         protocol=protocol(config))
