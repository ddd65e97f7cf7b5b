"""A damaged workspace never ends a `run` in a traceback: damaged rows, base scores and exported
models are recomputed with a warning naming the file, and the matrix is the one before. (Damaged
checkpoint steps: tests/train/test_train_checkpoints.py; the workspace lock:
tests/utils/test_utils_lock.py.)"""

import os

import numpy as np
import pytest

import micro_demo
from forgetting_jax.matrix.run import run_pipeline

TASK = "add"


def micro_config(keep_models: bool = False):
    """The micro demo (tests/micro_demo.py: shared compiled steps) with the one task TASK."""
    return micro_demo.micro_experiment((TASK,), **{"matrix.keep_models": keep_models})


@pytest.fixture(scope="module")
def micro(micro_matrix, tmp_path_factory):
    """A copy of the session's micro workspace with the matrix of the one task TASK (its row reused)."""
    workdir = micro_demo.copy_workspace(micro_matrix[0], str(tmp_path_factory.mktemp("recovery") / "W"))
    run_pipeline(micro_config(), workdir, analyze=False)
    return workdir


def _matrix(workdir):
    with np.load(os.path.join(workdir, "matrix", "forgetting.npz")) as data:
        return {k: data[k] for k in data.files}


def _damaged_copies(directory, name):
    return [n for n in os.listdir(directory) if n.startswith(name + ".damaged-")]


def _only_file(directory):
    """The path of the one .npz in `directory` (a task's rows, the base scores)."""
    (name,) = [n for n in os.listdir(directory) if n.endswith(".npz")]
    return os.path.join(directory, name)


@pytest.mark.slow
def test_truncated_row_is_moved_aside_and_recomputed(micro, warnings_of_package):
    before = _matrix(micro)
    rows = os.path.join(micro, "matrix", "rows", TASK)
    path = _only_file(rows)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    summary = run_pipeline(micro_config(), micro, analyze=False)
    assert summary.trained == [TASK]
    assert any(path in m and "damaged" in m for m in warnings_of_package), warnings_of_package
    assert _damaged_copies(rows, os.path.basename(path))
    np.testing.assert_allclose(_matrix(micro)["Z"], before["Z"], atol=1e-5)


@pytest.mark.slow
def test_malformed_base_scores_are_recomputed(micro, warnings_of_package):
    before = _matrix(micro)
    path = _only_file(os.path.join(micro, "matrix", "base_nll"))
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["nll"] = arrays["nll"][:-1]  # right fingerprint, wrong shape
    np.savez(path, **arrays)
    summary = run_pipeline(micro_config(), micro, analyze=False)
    assert not summary.base_scores_reused and summary.reused_rows == [TASK]
    assert any(path in m and "damaged" in m for m in warnings_of_package), warnings_of_package
    assert _damaged_copies(os.path.dirname(path), os.path.basename(path))
    np.testing.assert_allclose(_matrix(micro)["base_nll"], before["base_nll"], atol=1e-5)
    np.testing.assert_allclose(_matrix(micro)["Z"], before["Z"], atol=1e-5)


@pytest.mark.slow
def test_broken_export_is_redone(micro, warnings_of_package):
    before = _matrix(micro)
    row = _only_file(os.path.join(micro, "matrix", "rows", TASK))
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
