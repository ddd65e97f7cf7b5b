"""Orbax checkpoints of training runs and of parameters, and the fingerprint files beside them.

`RunCheckpoints` wraps one `CheckpointManager` per run. Each saved step holds the whole
`TrainState` ("state") and a small JSON record ("meta": best validation loss so far, its step);
fine-tuning steps also carry the validation loss as orbax metrics. Retention keeps the latest
step (to resume) and, when selecting by validation, the step with the lowest validation loss
(the run's result). Restoring takes the abstract state of the current mesh, so a checkpoint
written on one mesh restores onto any other (orbax reshards).

A finished artefact directory gets `fingerprint.json` last: {"fingerprint", "inputs", ...}. Its
presence with the expected fingerprint is what "finished" means; nothing else is trusted.
"""

import hashlib
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from forgetting_jax.train.state import TrainState
from forgetting_jax.utils.io import write_json

FINGERPRINT_FILE = "fingerprint.json"


class RunCheckpoints:
    """Latest (and optionally best-by-validation-loss) TrainState checkpoints of one run."""

    def __init__(self, directory: str, select_best: bool, async_save: bool = True):
        policies = [checkpoint_managers.LatestN(n=1)]
        if select_best:
            policies.append(checkpoint_managers.BestN(get_metric_fn=lambda m: -m["val_loss"], n=1,
                                                      keep_checkpoints_without_metrics=False))
        # Barrier names unique to this run: several runs may save at once (tasks trained together).
        prefix = hashlib.sha1(os.path.abspath(directory).encode()).hexdigest()[:12]
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix))
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, meta: dict, val_loss: float | None = None) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state.as_dict()), meta=ocp.args.JsonSave(meta))
        metrics = None if val_loss is None else {"val_loss": float(val_loss)}
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
        """The state of `step`, laid out as `abstract_state` (ShapeDtypeStructs with shardings)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state.as_dict()), meta=ocp.args.JsonRestore()))
        return TrainState.from_dict(restored["state"]), dict(restored["meta"])

    def restore_params(self, step: int, abstract_state: TrainState) -> Any:
        return self.restore(step, abstract_state)[0].params

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def save_params(directory: str, params: Any) -> None:
    """One orbax checkpoint of a parameter tree (complete or absent: orbax commits by rename)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(directory), params, force=True)
    checkpointer.wait_until_finished()
    checkpointer.close()


def restore_params(directory: str, abstract_params: Any) -> Any:
    """The parameters saved in `directory`, placed as `abstract_params` says (any mesh)."""
    checkpointer = ocp.StandardCheckpointer()
    try:
        return checkpointer.restore(os.path.abspath(directory), abstract_params)
    finally:
        checkpointer.close()


def abstract_tree(shapes: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying shardings, for restoring onto a mesh."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def read_fingerprint(directory: str) -> dict | None:
    path = os.path.join(directory, FINGERPRINT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(directory: str, fingerprint: str) -> bool:
    """True when `directory` holds a finished artefact of exactly this fingerprint."""
    record = read_fingerprint(directory)
    return record is not None and record.get("fingerprint") == fingerprint


def write_fingerprint(directory: str, fingerprint: str, inputs: dict, **extra: Any) -> None:
    """Marks `directory` finished (process 0 only): the last file an artefact gets."""
    if jax.process_index() == 0:
        write_json(os.path.join(directory, FINGERPRINT_FILE), {"fingerprint": fingerprint, "inputs": inputs, **extra})
