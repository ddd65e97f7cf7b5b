"""The fine-tuned checkpoint `forgetting-jax forecast` reads, and its check against the matrix's
base model.

A checkpoint is one of:
  - a Hugging Face model directory (config.json, safetensors, tokenizer), exported by this project
    or any other tool;
  - a .gguf file (converted once into a directory beside it; the gguf extra);
  - a fine-tuning run directory of this project (W/tasks/<task>/<fp>/, holding run.json and the
    exported model/): its run.json names the base model it was fine-tuned from; or a task's
    directory W/tasks/<task>/, for its most recent run with an exported model/.

The check (`check_base`): the matrix file records its base model's fingerprint and tokenizer
(matrix/provenance.py). A run directory's base fingerprint must equal the matrix's; any checkpoint's
tokenizer must be the base's (same vocabulary and special tokens), else the k scores would not be
comparable with the matrix's base scores. `--base=DIR` rescores the k examples with DIR instead
of reading the matrix's base scores, for a checkpoint whose base cannot be checked.
"""

import dataclasses
import json
import logging
import os

from forgetting_jax.models.gguf_source import is_gguf

log = logging.getLogger("forgetting_jax.forecast")


class ForecastError(ValueError):
    """The forecast cannot run with these inputs; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A fine-tuned model to forecast: where its HF directory is, and what it says of its base."""

    path: str  # as given
    model_dir: str  # the Hugging Face directory (or .gguf file) to load
    kind: str  # hf | gguf | run
    base_fingerprint: str | None  # a run directory's base (run.json inputs.base)
    task: str | None  # a run directory's task


def _run_base(run_dir: str) -> str | None:
    try:
        with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
            return json.load(f).get("base")
    except (OSError, json.JSONDecodeError):
        return None


def resolve_checkpoint(path: str, prefer_base: str | None = None) -> Checkpoint:
    """The Checkpoint at `path`; ForecastError naming what is missing. For a task's directory,
    its most recent exported run fine-tuned from `prefer_base` (the matrix's base) when there is
    one, else its most recent exported run."""
    if is_gguf(path):
        if not os.path.isfile(path):
            raise ForecastError(f"--model {path}: no such .gguf file")
        return Checkpoint(path, path, "gguf", None, None)
    if not os.path.isdir(path):
        raise ForecastError(f"--model {path}: no such directory (a Hugging Face model directory, a .gguf file or a "
                            "fine-tuning run directory W/tasks/<task>/<fp>)")
    run_json = os.path.join(path, "run.json")
    if not os.path.isfile(run_json) and not os.path.isfile(os.path.join(path, "config.json")):
        runs = [d for d in (os.path.join(path, name) for name in os.listdir(path))
                if os.path.isfile(os.path.join(d, "run.json"))
                and os.path.isfile(os.path.join(d, "model", "config.json"))]
        if runs:  # a task's directory: its most recent exported run (of the matrix's base, when there is one)
            same = [d for d in runs if prefer_base is not None and _run_base(d) == prefer_base]
            newest = max(same or runs, key=lambda d: os.path.getmtime(os.path.join(d, "model", "config.json")))
            if len(runs) > 1:
                log.info("--model %s: %d runs with an exported model; the most recent: %s", path, len(runs), newest)
            return resolve_checkpoint(newest)
    if os.path.isfile(run_json):
        try:
            with open(run_json, encoding="utf-8") as f:
                inputs = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ForecastError(f"{run_json}: not a readable run record ({err})") from err
        model_dir = os.path.join(path, "model")
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise ForecastError(f"--model {path}: a run directory without an exported model/ (fine-tune it with "
                                "`forgetting-jax finetune`, which exports it, or run with matrix.keep_models=true)")
        return Checkpoint(path, model_dir, "run", inputs.get("base"), inputs.get("task"))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ForecastError(f"--model {path}: no config.json: not a Hugging Face model directory")
    return Checkpoint(path, path, "hf", None, None)


def check_base(data: dict, matrix: str, checkpoint: Checkpoint, tokenizer_fp: str, rescoring: bool) -> dict:
    """What was checked of the checkpoint against the matrix's base ({"base_fingerprint": ...,
    "tokenizer": ...}: "same", "not recorded", or "rescored"); ForecastError on a mismatch."""
    out = {}
    recorded = data.get("base_fingerprint")
    if checkpoint.base_fingerprint is not None and recorded is not None:
        if checkpoint.base_fingerprint != recorded and not rescoring:
            raise ForecastError(
                f"--model {checkpoint.path} was fine-tuned from base {checkpoint.base_fingerprint} (its run.json), but "
                f"{matrix} holds the scores of base {recorded}: its forgetting would not be comparable; forecast with "
                "the matrix of that base, or pass --base=DIR (the base model it was fine-tuned from) to rescore")
        out["base_fingerprint"] = "same" if checkpoint.base_fingerprint == recorded else "rescored"
    else:
        out["base_fingerprint"] = "not recorded"
    expected = data.get("tokenizer_fingerprint")
    if expected is None:
        out["tokenizer"] = "not recorded"
    elif tokenizer_fp != expected:
        if not rescoring:
            raise ForecastError(
                f"--model {checkpoint.path}: its tokenizer differs from the base tokenizer of {matrix} (another "
                "vocabulary or special tokens), so it is not a fine-tuned checkpoint of that base; pass --base=DIR "
                "(its base model) to rescore the scored examples with it")
        out["tokenizer"] = "rescored"
    else:
        out["tokenizer"] = "same"
    return out
