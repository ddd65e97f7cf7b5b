"""A damaged workspace never ends in a traceback: damaged rows, base scores, exported models and
checkpoint steps are recomputed (or fallen back from) with a warning; a second command on a
workspace in use stops with a message naming the holder; a stale lock is taken over."""

import json
import logging
import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from config_files import load_config
from forgetting_jax.matrix.pipeline import run_pipeline
from forgetting_jax.train.checkpoints import COMMIT_MARKER, RunCheckpoints
from forgetting_jax.train.state import TrainState
from forgetting_jax.utils.lock import WorkspaceLocked, workspace_lock

TASK = "add"
# The shapes and settings of test_matrix_pipeline's micro demo, so that the compiled steps (pre-training,
# fine-tuning, scoring) are shared in-process instead of compiled again.
OVERRIDES = {
    "matrix.num_upstream": 50, "model.hidden_size": 64, "model.num_layers": 1, "model.num_heads": 2,
    "model.num_kv_heads": 2, "model.mlp_dim": 128, "pretrain.steps": 12, "pretrain.batch_size": 4,
    "pretrain.micro_rows": 4, "pretrain.max_examples": 400, "train.steps": 6, "train.eval_every": 3,
    "train.log_every": 3,
}


def micro_config(keep_models: bool = False):
    config = load_config("demo")
    config.data.tasks = (TASK,)
    for key, value in OVERRIDES.items():
        section, field = key.split(".")
        config[section][field] = type(config[section][field])(value)
    config.matrix.keep_models = keep_models
    return config


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_of_package():
    """WARNING messages of the `forgetting_jax` loggers (whatever setup_logging did to propagation)."""
    handler = _Records()
    logger = logging.getLogger("forgetting_jax")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("recovery"))
    run_pipeline(micro_config(), workdir, analyze=False)
    return workdir


def _matrix(workdir):
    with np.load(os.path.join(workdir, "matrix", "forgetting.npz")) as data:
        return {k: data[k] for k in data.files}


def _damaged_copies(directory, name):
    return [n for n in os.listdir(directory) if n.startswith(name + ".damaged-")]


def test_truncated_row_is_moved_aside_and_recomputed(micro, warnings_of_package):
    before = _matrix(micro)
    rows = os.path.join(micro, "matrix", "rows")
    path = os.path.join(rows, f"{TASK}.npz")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    summary = run_pipeline(micro_config(), micro, analyze=False)
    assert summary.trained == [TASK]
    assert any(path in m and "damaged" in m for m in warnings_of_package), warnings_of_package
    assert _damaged_copies(rows, f"{TASK}.npz")
    np.testing.assert_allclose(_matrix(micro)["Z"], before["Z"], atol=1e-5)


def test_malformed_base_scores_are_recomputed(micro, warnings_of_package):
    before = _matrix(micro)
    path = os.path.join(micro, "matrix", "base_nll.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["nll"] = arrays["nll"][:-1]  # right fingerprint, wrong shape
    np.savez(path, **arrays)
    summary = run_pipeline(micro_config(), micro, analyze=False)
    assert not summary.base_scores_reused and summary.reused_rows == [TASK]
    assert any(path in m and "damaged" in m for m in warnings_of_package), warnings_of_package
    assert _damaged_copies(os.path.join(micro, "matrix"), "base_nll.npz")
    np.testing.assert_allclose(_matrix(micro)["base_nll"], before["base_nll"], atol=1e-5)
    np.testing.assert_allclose(_matrix(micro)["Z"], before["Z"], atol=1e-5)


def test_broken_export_is_redone(micro, warnings_of_package):
    before = _matrix(micro)
    row = os.path.join(micro, "matrix", "rows", f"{TASK}.npz")
    os.remove(row)
    run_pipeline(micro_config(keep_models=True), micro, analyze=False)  # retrains, keeps model/
    (run_dir,) = [os.path.join(micro, "tasks", TASK, d) for d in os.listdir(os.path.join(micro, "tasks", TASK))]
    weights = os.path.join(run_dir, "model", "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    os.remove(row)
    summary = run_pipeline(micro_config(keep_models=True), micro, analyze=False)
    assert summary.trained == [TASK]
    assert any(os.path.join(run_dir, "model") in m and "damaged" in m for m in warnings_of_package)
    from safetensors import safe_open

    with safe_open(weights, framework="numpy") as handle:  # the redone export opens
        assert list(handle.keys())
    np.testing.assert_allclose(_matrix(micro)["Z"], before["Z"], atol=1e-5)


# Checkpoints ------------------------------------------------------------------------------------

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


# The workspace lock -----------------------------------------------------------------------------

def _write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, ".lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "started": "2024-01-01 00:00:00", "command": "run", **holder}, f)


def test_lock_of_a_live_process_stops_a_second_command(tmp_path):
    workdir = str(tmp_path / "w")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(workdir, pid=sleeper.pid)
        with pytest.raises(WorkspaceLocked, match=f"in use by `forgetting-jax run` \\(pid {sleeper.pid} on host"):
            with workspace_lock(workdir, "replay", main=True):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.isfile(os.path.join(workdir, ".lock"))  # not ours to remove


def test_lock_held_by_another_process_stops_the_cli(tmp_path):
    workdir = str(tmp_path / "w")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from forgetting_jax.utils.lock import workspace_lock\n"
         "with workspace_lock(sys.argv[1], 'run', main=True):\n    print('held', flush=True); time.sleep(60)",
         workdir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceLocked, match=f"pid {holder.pid}"):
            with workspace_lock(workdir, "finetune", main=True):
                pass
        root = os.path.join(os.path.dirname(__file__), "..", "..")
        result = subprocess.run([sys.executable, "-m", "forgetting_jax", "run", "--config=configs/demo.py",
                                 f"--workdir={workdir}"], cwd=root, capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, JAX_PLATFORMS="cpu"))
        assert result.returncode == 1, result.stderr
        assert f"forgetting-jax run: error: the workspace {workdir} is in use by `forgetting-jax run` (pid " \
               f"{holder.pid}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over_and_released(tmp_path, warnings_of_package):
    workdir = str(tmp_path / "w")
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(workdir, pid=dead.pid)
    with workspace_lock(workdir, "run", main=True):
        with open(os.path.join(workdir, ".lock")) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert any("stale lock" in m and f"pid {dead.pid}" in m for m in warnings_of_package), warnings_of_package
    assert not os.path.exists(os.path.join(workdir, ".lock"))
    with pytest.raises(KeyboardInterrupt):
        with workspace_lock(workdir, "run", main=True):
            raise KeyboardInterrupt
    assert not os.path.exists(os.path.join(workdir, ".lock"))


def test_lock_of_another_host_says_how_to_remove_it(tmp_path):
    workdir = str(tmp_path / "w")
    _write_lock(workdir, pid=1, host="some-other-host")
    with pytest.raises(WorkspaceLocked, match="If you are sure that no run on some-other-host uses this workspace, "
                                              "delete .*\\.lock and start again"):
        with workspace_lock(workdir, "run", main=True):
            pass


def test_store_moves_aside_garbage_and_wrong_dtypes(tmp_path, warnings_of_package):
    from forgetting_jax.matrix.store import MatrixStore

    store = MatrixStore(str(tmp_path / "matrix"))
    store.write_row("t", "fp", np.array([1.0, 2.0]))
    with open(store.row_path("t"), "wb") as f:
        f.write(b"not a zip file")
    assert store.row("t", "fp", 2) is None and not os.path.exists(store.row_path("t"))
    np.savez(store.row_path("t"), task=np.asarray("t"), ft_nll=np.array(["a", "b"]), fingerprint=np.asarray("fp"))
    assert store.row("t", "fp", 2) is None
    assert len(_damaged_copies(store.rows_dir, "t.npz")) == 2
    store.write_row("t", "fp", np.array([1.0, 2.0]))
    assert store.row("t", "other-fp", 2) is None and os.path.exists(store.row_path("t"))  # stale, not damaged
    assert store.row("t", "fp", 3) is None  # wrong length
    assert sum("damaged" in m for m in warnings_of_package) == 3, warnings_of_package
