"""Orbax checkpoints of training runs and of parameters, and the fingerprint files beside them.

`RunCheckpoints` wraps one `CheckpointManager` per run. Each saved step holds the whole
`TrainState` ("state") and a small JSON record ("meta": best validation loss so far, its step);
fine-tuning steps also carry the validation loss as orbax metrics. Retention keeps the latest
step (to resume) and, when selecting by validation, the step with the lowest validation loss
(the run's result). Restoring takes the abstract state of the current mesh, so a checkpoint
written on one mesh restores onto any other (orbax reshards).

Damaged steps never stop a run: orbax (0.12) writes a step into `<step>.orbax-checkpoint-tmp-*`
and renames it into place with a `commit_success.txt` marker inside. A step directory without
that marker (a half-copied or half-written step) is not committed: it is removed with a warning
and ignored. `restore_latest` restores the newest committed step and, when that fails (corrupted
files), removes it with a warning and tries the step before it; with none left the run starts over.

A finished artefact directory gets `fingerprint.json` last: {"fingerprint", "inputs", ...}. Its
presence with the expected fingerprint is what "finished" means; nothing else is trusted.
"""

import hashlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from forgetting_jax.utils.runtime import is_main
from forgetting_jax.train.state import TrainState
from forgetting_jax.utils.io import write_json

FINGERPRINT_FILE = "fingerprint.json"
COMMIT_MARKER = "commit_success.txt"  # what orbax writes into a step directory when it commits

log = logging.getLogger("forgetting_jax.train")


def committed_steps(directory: str) -> tuple[list[int], list[int]]:
    """(committed steps, uncommitted step directories) under a CheckpointManager's `directory`;
    orbax's own temporary directories (`<step>.orbax-checkpoint-tmp-*`) are neither."""
    good, bad = [], []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.isdigit() and os.path.isdir(os.path.join(directory, name)):
                marked = os.path.isfile(os.path.join(directory, name, COMMIT_MARKER))
                (good if marked else bad).append(int(name))
    return sorted(good), sorted(bad)


class RunCheckpoints:
    """Latest (and optionally best-by-validation-loss) TrainState checkpoints of one run."""

    def __init__(self, directory: str, select_best: bool, async_save: bool = True):
        policies = [checkpoint_managers.LatestN(n=1)]
        if select_best:
            policies.append(checkpoint_managers.BestN(get_metric_fn=lambda m: -m["val_loss"], n=1,
                                                      keep_checkpoints_without_metrics=False))
        # Barrier names unique to this run: several runs may save at once (tasks trained together).
        prefix = hashlib.sha1(os.path.abspath(directory).encode()).hexdigest()[:12]
        self.directory = os.path.abspath(directory)
        for step in committed_steps(self.directory)[1]:
            log.warning("checkpoint step %d in %s has no commit marker (%s; half-written or half-copied): "
                        "removing it and resuming from the last committed step", step, self.directory, COMMIT_MARKER)
            self._delete_step(step)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix))
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                             item_names=("state", "meta"))

    def _delete_step(self, step: int) -> None:
        if is_main():
            shutil.rmtree(os.path.join(self.directory, str(step)), ignore_errors=True)

    def latest_step(self) -> int | None:
        """The newest committed step (None: none)."""
        steps = self.steps()
        return steps[-1] if steps else None

    def steps(self) -> list[int]:
        committed = set(committed_steps(self.directory)[0])
        return [s for s in self.manager.all_steps() if s in committed]

    def restore_latest(self, abstract_state: TrainState) -> tuple[int, TrainState, dict] | None:
        """(step, state, meta) of the newest committed step that restores; a step that fails is
        removed with a warning and the one before it is tried. None: no step restores (start over)."""
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, abstract_state)
                return step, state, meta
            except Exception as err:  # corrupted or truncated files: orbax, tensorstore, JSON errors
                earlier = [s for s in self.steps() if s < step]
                then = f"falling back to step {earlier[-1]}" if earlier else "starting the run over"
                log.warning("checkpoint step %d in %s cannot be restored (%s: %s); removing it and %s", step,
                            self.directory, type(err).__name__, str(err).splitlines()[0][:300] if str(err) else "",
                            then)
                self._delete_step(step)
                try:
                    self.manager.reload()
                except Exception:  # noqa: BLE001 - reloading is best effort
                    pass
        return None

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
    if is_main():
        write_json(os.path.join(directory, FINGERPRINT_FILE), {"fingerprint": fingerprint, "inputs": inputs, **extra})
