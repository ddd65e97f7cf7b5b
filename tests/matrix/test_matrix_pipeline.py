"""`forgetting-jax run` end to end on a micro demo (M = 3, N = 50): the contract's matrix, reuse of
everything on a second run, and a run killed at a random point that resumes to the same matrix."""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from forgetting_jax.matrix.run import run_pipeline
from micro_demo import TASKS, cli_overrides, copy_workspace, micro_experiment


pytestmark = pytest.mark.slow  # the whole pipeline, trained

@pytest.fixture(scope="module")
def finished(micro_matrix):
    return micro_matrix  # (W, RunSummary) of the micro demo, built once per session


def test_matrix_follows_the_contract(finished):
    workdir, summary = finished
    data = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))
    assert list(data["tasks"]) == list(TASKS)
    assert data["Z"].shape == (3, 50) and data["Z"].dtype == np.float32
    assert data["ft_nll"].shape == (3, 50) and data["base_nll"].shape == (50,)
    assert len(data["example_ids"]) == len(set(data["example_ids"])) == 50
    assert len(data["example_sources"]) == 50
    np.testing.assert_allclose(data["Z"], data["ft_nll"] - data["base_nll"][None], atol=1e-6)
    assert np.isfinite(data["Z"]).all() and np.abs(data["Z"]).max() > 0
    assert sorted(summary.trained) == sorted(TASKS)
    experiment = os.path.join(workdir, "experiments", "demo")
    assert summary.experiment_dir == experiment and summary.matrix_path == os.path.join(experiment, "forgetting.npz")
    with open(summary.matrix_path, "rb") as own, open(os.path.join(workdir, "matrix", "forgetting.npz"), "rb") as copy:
        assert own.read() == copy.read()  # W/matrix/forgetting.npz: a copy of the latest run's
    assert os.path.isfile(os.path.join(experiment, "analysis", "heatmap.png"))
    with open(os.path.join(workdir, "report.md")) as f:  # the copy's figures point into the experiment
        assert "](experiments/demo/analysis/heatmap.png)" in f.read()
    assert all(os.path.isfile(os.path.join(workdir, "matrix", "rows", t, fp + ".npz"))
               for t, fp in _experiment_rows(experiment).items())
    assert not any(os.path.isdir(os.path.join(workdir, "tasks", t, fp, "model"))
                   for t in TASKS for fp in os.listdir(os.path.join(workdir, "tasks", t)))


def _experiment_rows(experiment):
    with open(os.path.join(experiment, "experiment.json")) as f:
        return json.load(f)["rows"]


def test_second_run_reuses_everything(finished):
    workdir, _ = finished
    before = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["Z"]
    summary = run_pipeline(micro_experiment(), workdir, analyze=False)
    assert summary.trained == [] and sorted(summary.reused_rows) == sorted(TASKS)
    assert summary.base_scores_reused
    np.testing.assert_array_equal(np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["Z"], before)


def test_unknown_task_is_a_clear_error(finished):
    workdir, _ = finished
    with pytest.raises(ValueError, match="nope"):
        run_pipeline(micro_experiment(), workdir, tasks=["nope"])


def test_killed_run_resumes_to_the_uninterrupted_matrix(finished, tmp_path):
    reference = np.load(os.path.join(finished[0], "matrix", "forgetting.npz"))
    workdir = str(tmp_path / "killed")
    command = [sys.executable, "-m", "forgetting_jax", "run", "--config=configs/demo.py", f"--workdir={workdir}",
               "--noanalyze"] + cli_overrides()
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = dict(os.environ, FJ_PROGRESS="0")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_run = os.path.join(workdir, "tasks", "*", "*")  # the first task's fine-tuning has started
    deadline = time.time() + 300
    while not glob.glob(first_run) and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(random.Random(0).uniform(0.0, 2.0))  # a seeded moment in fine-tuning, scoring or writing a row
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]  # killed, not finished
    rows_before = len(glob.glob(os.path.join(workdir, "matrix", "rows", "*", "*.npz")))
    assert rows_before < len(TASKS)  # the kill interrupted the matrix: at least one row was still to come
    resumed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))
    assert list(result["tasks"]) == list(reference["tasks"])
    np.testing.assert_allclose(result["Z"], reference["Z"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result["example_ids"], reference["example_ids"])


def _transformers_mean_nll(model_dir, examples):
    """Per-example mean NLL of the scored tokens under transformers' model of `model_dir` (fp32,
    one example at a time): an independent reference for the rows."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    out = []
    for ids, mask in (e.pair for e in examples):
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(ids[None], dtype=torch.long)).logits[0].double()
        logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.as_tensor(ids[1:, None], dtype=torch.long))
        scored = torch.as_tensor(mask[1:])
        out.append(float(-logp[:, 0][scored].mean()))
    return np.array(out)


def test_rows_scored_in_memory_equal_transformers_on_the_exported_model(finished, tmp_path):
    """Rows are scored from the fine-tuned parameters where they sit (no export and reload); with
    matrix.keep_models the run also exports them, and transformers' scoring of that export (fp32)
    gives the same row."""
    from forgetting_jax.matrix.upstream import prepare_upstream

    config = micro_experiment(**{"matrix.keep_models": True})
    workdir = copy_workspace(finished[0], str(tmp_path / "W"))
    summary = run_pipeline(config, workdir, tasks=["add"], redo=["add"], analyze=False)
    assert summary.trained == ["add"]
    [run_dir] = glob.glob(os.path.join(workdir, "tasks", "add", "*"))
    examples = prepare_upstream(config, workdir).examples
    row = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["ft_nll"][list(TASKS).index("add")]
    reference = _transformers_mean_nll(os.path.join(run_dir, "model"), examples)
    np.testing.assert_allclose(row, reference, rtol=2e-5, atol=2e-5)
