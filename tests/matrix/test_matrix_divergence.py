"""matrix.on_divergence: a task whose fine-tuning diverges stops the matrix (stop) or is left out
of it (skip), on the one-task path and on the P-task path; no non-finite row is ever written."""

import glob
import os

import numpy as np
import pytest

from forgetting_jax.matrix.run import run_pipeline
from forgetting_jax.train import driver
from forgetting_jax.train.driver import TrainingDiverged
from micro_demo import TASKS, copy_workspace, micro_experiment

pytestmark = pytest.mark.slow
DIVERGING = "uppercase"


@pytest.fixture
def diverging(monkeypatch):
    """Fine-tuning on DIVERGING reports a NaN gradient norm at its second step."""
    original = driver.Run.record_step

    def record_step(self, done, values, slot, *args):
        if self.name.endswith(f" {DIVERGING}") and done == 2:
            values = dict(values, grad_norm=np.full_like(values["grad_norm"], np.nan))
        return original(self, done, values, slot, *args)

    monkeypatch.setattr(driver.Run, "record_step", record_step)


@pytest.mark.parametrize("parallel", [1, 2])
def test_skip_leaves_the_task_out_and_stop_stops(micro_matrix, tmp_path, diverging, parallel):
    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    changes = {"matrix.parallel_tasks": parallel, "matrix.on_divergence": "stop"}
    with pytest.raises(TrainingDiverged, match=f"finetune {DIVERGING}: diverged at step 2"):
        run_pipeline(micro_experiment(**changes), workdir, redo=[DIVERGING, "parity"], analyze=False)
    summary = run_pipeline(micro_experiment(**dict(changes, **{"matrix.on_divergence": "skip"})), workdir,
                           redo=[DIVERGING, "parity"], analyze=False)
    assert summary.diverged == [DIVERGING] and summary.tasks == [t for t in TASKS if t != DIVERGING]
    assert "parity" in summary.trained
    matrix = np.load(summary.matrix_path)
    assert list(matrix["tasks"]) == summary.tasks and np.isfinite(matrix["Z"]).all()
    assert not glob.glob(os.path.join(workdir, "matrix", "rows", DIVERGING, "*.npz"))
