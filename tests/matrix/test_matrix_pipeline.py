"""`forgetting-jax run` end to end on a micro demo (M = 3, N = 50): the contract's matrix, reuse of
everything on a second run, and a run killed at a random point that resumes to the same matrix."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from forgetting_jax.matrix.pipeline import run_pipeline
from config_files import load_config

TASKS = ("add", "uppercase", "parity")
OVERRIDES = {
    "data.tasks": repr(TASKS), "matrix.num_upstream": "50", "model.hidden_size": "64", "model.num_layers": "1",
    "model.num_heads": "2", "model.num_kv_heads": "2", "model.mlp_dim": "128", "pretrain.steps": "12",
    "pretrain.batch_size": "4", "pretrain.micro_rows": "4", "pretrain.max_examples": "400", "train.steps": "6",
    "train.eval_every": "3", "train.log_every": "3",
}


def micro_config():
    config = load_config("demo")
    for key, value in OVERRIDES.items():
        section, field = key.split(".")
        current = config[section][field]
        config[section][field] = TASKS if field == "tasks" else type(current)(value)
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("micro"))
    summary = run_pipeline(micro_config(), workdir)
    return workdir, summary


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
    assert os.path.isfile(os.path.join(workdir, "report.md"))
    assert os.path.isfile(os.path.join(workdir, "analysis", "heatmap.png"))
    assert not any(os.path.isdir(os.path.join(workdir, "tasks", t, fp, "model"))
                   for t in TASKS for fp in os.listdir(os.path.join(workdir, "tasks", t)))


def test_second_run_reuses_everything(finished):
    workdir, _ = finished
    before = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["Z"]
    summary = run_pipeline(micro_config(), workdir, analyze=False)
    assert summary.trained == [] and sorted(summary.reused_rows) == sorted(TASKS)
    assert summary.base_scores_reused
    np.testing.assert_array_equal(np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["Z"], before)


def test_unknown_task_is_a_clear_error(finished):
    workdir, _ = finished
    with pytest.raises(ValueError, match="nope"):
        run_pipeline(micro_config(), workdir, tasks=["nope"])


def test_killed_run_resumes_to_the_uninterrupted_matrix(finished, tmp_path):
    reference = np.load(os.path.join(finished[0], "matrix", "forgetting.npz"))
    workdir = str(tmp_path / "killed")
    command = [sys.executable, "-m", "forgetting_jax", "run", "--config=configs/demo.py", f"--workdir={workdir}",
               "--noanalyze"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = dict(os.environ, FJ_PROGRESS="0")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_scores = os.path.join(workdir, "matrix", "base_nll.npz")
    deadline = time.time() + 300
    while not os.path.exists(base_scores) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(random.uniform(0.0, 6.0))  # somewhere in fine-tuning, scoring or writing the rows
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows_before = len(os.listdir(os.path.join(workdir, "matrix", "rows"))) if os.path.isdir(
        os.path.join(workdir, "matrix", "rows")) else 0
    resumed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))
    assert list(result["tasks"]) == list(reference["tasks"])
    np.testing.assert_allclose(result["Z"], reference["Z"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result["example_ids"], reference["example_ids"])
    assert rows_before <= len(TASKS)
