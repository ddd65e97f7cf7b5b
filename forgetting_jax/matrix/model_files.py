"""The model directories the matrix run writes or reads: whether one loads, and removing what the
run made (process 0 only)."""

import json
import logging
import os
import shutil

from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.run")


def model_problem(model_dir: str) -> str | None:
    """Why the HF directory `model_dir` (an export of a run) cannot be loaded, or None:
    config.json missing or not JSON, weights missing, a safetensors file that does not open (a
    truncated file fails its header check)."""
    from safetensors import safe_open

    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"config.json: {type(err).__name__}: {err}"
    index = os.path.join(model_dir, "model.safetensors.index.json")
    try:
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        for name in files:
            path = os.path.join(model_dir, name)
            if not os.path.isfile(path):
                return f"{name} is missing"
            with safe_open(path, framework="numpy") as handle:
                handle.keys()
    except Exception as err:  # OSError, ValueError, KeyError, SafetensorError
        return f"{type(err).__name__}: {err}"
    return None


def has_model(run_dir: str) -> bool:
    """True when the finished run in `run_dir` kept a loadable model/; a damaged one is moved aside
    (process 0) with a warning, so that the run is trained and exported again."""
    model_dir = os.path.join(run_dir, "model")
    if not os.path.isdir(model_dir):
        return False
    problem = model_problem(model_dir)
    if problem is None:
        return True
    log.warning("%s is damaged (%s); training that run again", model_dir, problem)
    if is_main():
        shutil.rmtree(model_dir, ignore_errors=True)
    return False


def check_base_model(base) -> None:
    """A clear error (not a traceback from the loader) when a pre-trained base's model/ cannot be
    read (`base`: train.base.BaseModel)."""
    if base.model_dir != os.path.join(base.directory, "model"):
        return  # an imported base: the user's own directory, checked by its fingerprint
    problem = model_problem(base.model_dir) if os.path.isdir(base.model_dir) else "it is missing"
    if problem is not None:
        raise ValueError(f"the base model {base.model_dir} is damaged ({problem}); delete {base.directory} and "
                         "run again to pre-train it again (the same settings give the same base)")


def remove(path: str) -> None:
    """Deletes a file or directory of the run's own making (process 0 only)."""
    if not is_main() or not os.path.exists(path):
        return
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.remove(path)
