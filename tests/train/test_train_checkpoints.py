"""Damaged checkpoint steps (train/checkpoints.py): a step without orbax's commit marker is
removed and the previous step restored; a corrupted committed step falls back to the one before,
and with none left the run starts over; each with a warning."""

import os

import jax.numpy as jnp

from forgetting_jax.train.checkpoints import COMMIT_MARKER, RunCheckpoints
from forgetting_jax.train.state import TrainState


def _state(step):
    return TrainState(step=jnp.asarray(step, jnp.int32), params={"w": jnp.full((4,), float(step))},
                      opt_state={"m": jnp.zeros((4,))})


def _saved(directory):
    checkpoints = RunCheckpoints(directory, select_best=True, async_save=False)
    # step 2 is the best, step 4 the latest: retention keeps both
    checkpoints.save(2, _state(2), {"best_step": 2, "best_val_loss": 0.1}, val_loss=0.1)
    checkpoints.save(4, _state(4), {"best_step": 2, "best_val_loss": 0.1}, val_loss=0.5)
    checkpoints.wait()
    checkpoints.close()
    assert sorted(int(n) for n in os.listdir(directory) if n.isdigit()) == [2, 4]


def _restore_latest(directory):
    checkpoints = RunCheckpoints(directory, select_best=True, async_save=False)
    try:
        abstract = TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros((4,))},
                              opt_state={"m": jnp.zeros((4,))})
        return checkpoints.restore_latest(abstract)
    finally:
        checkpoints.close()


def test_step_without_commit_marker_falls_back_to_the_previous_step(tmp_path, warnings_of_package):
    directory = str(tmp_path / "checkpoints")
    _saved(directory)
    os.remove(os.path.join(directory, "4", COMMIT_MARKER))
    step, state, meta = _restore_latest(directory)
    assert step == 2 and float(state.params["w"][0]) == 2.0 and meta["best_step"] == 2
    assert any("step 4" in m and "commit marker" in m for m in warnings_of_package), warnings_of_package
    assert not os.path.exists(os.path.join(directory, "4"))


def _corrupt(step_dir):
    for root, _, files in os.walk(step_dir):
        for name in files:
            if name != COMMIT_MARKER:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"\0garbage")


def test_corrupted_committed_step_falls_back_then_starts_over(tmp_path, warnings_of_package):
    directory = str(tmp_path / "checkpoints")
    _saved(directory)
    _corrupt(os.path.join(directory, "4"))
    step, state, _ = _restore_latest(directory)
    assert step == 2 and float(state.params["w"][0]) == 2.0
    assert any("step 4" in m and "falling back to step 2" in m for m in warnings_of_package), warnings_of_package
    _corrupt(os.path.join(directory, "2"))
    assert _restore_latest(directory) is None
    assert any("step 2" in m and "starting the run over" in m for m in warnings_of_package), warnings_of_package
