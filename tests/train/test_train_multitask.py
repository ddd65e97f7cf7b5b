"""Fine-tuning P tasks at once (matrix.parallel_tasks) gives the runs, fingerprints and matrix of
one-at-a-time runs, up to float tolerance; on a task mesh of two sub-meshes too. On the micro demo
(tests/micro_demo.py)."""

import os
import shutil

import jax
import numpy as np
import pytest

from forgetting_jax.matrix.run import run_pipeline
from forgetting_jax.train import multitask
from forgetting_jax.train.checkpoints import read_fingerprint
from forgetting_jax.train.metrics import read_metrics
from micro_demo import TASKS, micro_experiment


def seed_workdir(reference: str, workdir: str) -> None:
    """A new workspace that shares the reference's base model and base scores (not its runs)."""
    shutil.copytree(os.path.join(reference, "base"), os.path.join(workdir, "base"))
    os.makedirs(os.path.join(workdir, "matrix"))
    for name in ("base_nll", "base_nll.npz"):  # base_nll/<fp>.npz; base_nll.npz in the earlier layout
        path = os.path.join(reference, "matrix", name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(workdir, "matrix", name))
        elif os.path.isfile(path):
            shutil.copy(path, os.path.join(workdir, "matrix"))


def task_runs(workdir):
    return {t: read_fingerprint(os.path.join(workdir, "tasks", t, os.listdir(os.path.join(workdir, "tasks", t))[0]))
            for t in TASKS}


@pytest.fixture(scope="module")
def one_at_a_time(micro_matrix):
    return micro_matrix[0]  # the micro demo's matrix, its tasks fine-tuned one at a time


@pytest.mark.slow
@pytest.mark.parametrize("submeshes,interrupted", [(1, False), (2, True)])
def test_parallel_tasks_match_one_at_a_time(one_at_a_time, tmp_path, monkeypatch, submeshes, interrupted):
    """Two tasks at once on one device (vmapped), and on two sub-meshes of one device each; the
    second run is interrupted after step 4 of its first group and resumed from its checkpoints."""
    workdir = str(tmp_path / "parallel")
    seed_workdir(one_at_a_time, workdir)
    config = micro_experiment(**{"matrix.parallel_tasks": 2, "matrix.task_submeshes": submeshes,
                             "mesh.num_devices": submeshes, "train.save_every": 2})
    if interrupted:
        calls = []
        original = multitask.MultiTaskSteps.train_step

        def failing(self, *args):
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt("stopped after step 4")
            return original(self, *args)

        monkeypatch.setattr(multitask.MultiTaskSteps, "train_step", failing)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config, workdir, analyze=False)
        monkeypatch.setattr(multitask.MultiTaskSteps, "train_step", original)
    summary = run_pipeline(config, workdir, analyze=False)
    assert sorted(summary.trained) == sorted(TASKS) and summary.base_scores_reused
    expected = np.load(os.path.join(one_at_a_time, "matrix", "forgetting.npz"))
    got = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))
    assert list(got["tasks"]) == list(expected["tasks"])
    np.testing.assert_allclose(got["Z"], expected["Z"], rtol=0, atol=2e-4)
    assert np.abs(expected["Z"]).max() > 1e-2
    reference, runs = task_runs(one_at_a_time), task_runs(workdir)
    for task in TASKS:
        assert runs[task]["fingerprint"] == reference[task]["fingerprint"]
        assert runs[task]["best_step"] == reference[task]["best_step"]
        np.testing.assert_allclose(runs[task]["best_val_loss"], reference[task]["best_val_loss"], atol=1e-4)
        run_dir = os.path.join(workdir, "tasks", task, runs[task]["fingerprint"])
        metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 7))
        assert [m["step"] for m in metrics if "val_loss" in m] == [0, 3, 6]


def test_task_mesh_shape():
    mesh = multitask.make_task_mesh({"data": -1, "fsdp": 2, "tensor": 1}, 2, jax.devices()[:8])
    assert mesh.axis_names == ("task", "data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"task": 2, "data": 2, "fsdp": 2, "tensor": 1}
    with pytest.raises(ValueError, match="sub-meshes"):
        multitask.make_task_mesh({"data": -1}, 3, jax.devices()[:8])
