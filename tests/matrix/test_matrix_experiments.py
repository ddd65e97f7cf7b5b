"""Experiments sharing a workspace never overwrite each other: rows are keyed by their
fingerprints, each experiment has its own matrix, analysis and report under W/experiments/, and
switching back to an earlier experiment trains and scores nothing. A workspace of the earlier
layout (rows/<task>.npz, base_nll.npz) keeps its work. The micro demo (tests/micro_demo.py) with
2 fine-tuning steps per task: A, then A with train.lr changed (B), then A again."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from forgetting_jax.matrix.experiments import relocate_links, resolve_experiment
from forgetting_jax.matrix.run import run_pipeline
from micro_demo import TASKS, copy_workspace, micro_experiment
from test_support import package_warnings

FAST = {"train.steps": 2, "train.eval_every": 2, "train.log_every": 2}
OTHER_LR = {**FAST, "train.lr": 1e-4}  # B: 2 steps are enough for rows that differ by lr


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


@pytest.fixture(scope="module")
def three_runs(micro_matrix, tmp_path_factory):
    """W after run A (the micro demo: a copy of the session's workspace, where A is built), then B
    (train.lr changed), then A again; the summaries (A's first: the session's build), A's matrix
    bytes after its first run, and a copy of W as it was after that first run."""
    workdir = str(tmp_path_factory.mktemp("experiments") / "W")
    copy_workspace(micro_matrix[0], workdir)
    first = micro_matrix[1]
    first = dataclasses.replace(first, matrix_path=first.matrix_path.replace(micro_matrix[0], workdir),
                                experiment_dir=first.experiment_dir.replace(micro_matrix[0], workdir))
    first_bytes = _read(first.matrix_path)
    after_first = str(tmp_path_factory.mktemp("after-first") / "W")
    shutil.copytree(workdir, after_first)
    with package_warnings() as warnings:
        second = run_pipeline(micro_experiment(**OTHER_LR), workdir, analyze=False)
    third = run_pipeline(micro_experiment(), workdir, analyze=False)
    return workdir, (first, second, third), first_bytes, after_first, warnings


@pytest.mark.slow
def test_switching_back_reuses_every_row(three_runs):
    _, (first, second, third), _, _, _ = three_runs
    assert sorted(first.trained) == sorted(TASKS) and sorted(second.trained) == sorted(TASKS)
    assert third.trained == [] and sorted(third.reused_rows) == sorted(TASKS)
    assert second.base_scores_reused and third.base_scores_reused  # lr does not touch the base scores


@pytest.mark.slow
def test_each_experiment_keeps_its_own_matrix(three_runs):
    workdir, (first, second, third), first_bytes, _, warnings = three_runs
    assert third.experiment_dir == first.experiment_dir == os.path.join(workdir, "experiments", "demo")
    assert second.experiment_dir != first.experiment_dir
    a, b = _arrays(first.matrix_path), _arrays(second.matrix_path)
    assert list(a["tasks"]) == list(b["tasks"]) == list(TASKS)
    assert not np.allclose(a["Z"], b["Z"])
    np.testing.assert_array_equal(a["base_nll"], b["base_nll"])
    assert _read(first.matrix_path) == first_bytes  # switching back left A's file as it was
    assert _read(os.path.join(workdir, "matrix", "forgetting.npz")) == first_bytes  # the latest run's copy


@pytest.mark.slow
def test_same_name_other_settings_goes_beside_with_a_warning(three_runs):
    workdir, (first, second, _), _, _, warnings = three_runs
    experiments = json.loads(_read(os.path.join(first.experiment_dir, "experiment.json"), "r"))
    other = json.loads(_read(os.path.join(second.experiment_dir, "experiment.json"), "r"))
    assert os.path.basename(second.experiment_dir) == "demo-" + other["fingerprint"][:8]
    assert experiments["fingerprint"] != other["fingerprint"] and experiments["name"] == other["name"] == "demo"
    assert experiments["base_scores"] == other["base_scores"]
    assert any("experiments/demo" in m and os.path.basename(second.experiment_dir) in m for m in warnings), warnings
    for record in (experiments, other):  # every row of both experiments is on disk under its fingerprint
        assert sorted(record["rows"]) == sorted(TASKS)
        for task, fp in record["rows"].items():
            assert os.path.isfile(os.path.join(workdir, "matrix", "rows", task, fp + ".npz"))
    assert set(experiments["rows"].values()).isdisjoint(other["rows"].values())


@pytest.mark.slow
def test_a_workspace_of_the_earlier_layout_keeps_its_work(three_runs, tmp_path):
    """Rows at rows/<task>.npz and base scores at base_nll.npz (keyed by name alone) are found by
    their stored fingerprints and copied to their fingerprints' places; nothing is recomputed."""
    _, (first, _, _), first_bytes, after_first, _ = three_runs
    workdir = str(tmp_path / "W")
    shutil.copytree(after_first, workdir)
    matrix = os.path.join(workdir, "matrix")
    shutil.rmtree(os.path.join(workdir, "experiments"))
    os.remove(os.path.join(matrix, "forgetting.npz"))
    (base,) = os.listdir(os.path.join(matrix, "base_nll"))
    os.replace(os.path.join(matrix, "base_nll", base), os.path.join(matrix, "base_nll.npz"))
    os.rmdir(os.path.join(matrix, "base_nll"))
    for task in TASKS:
        (row,) = os.listdir(os.path.join(matrix, "rows", task))
        os.replace(os.path.join(matrix, "rows", task, row), os.path.join(matrix, "rows", task + ".npz"))
        os.rmdir(os.path.join(matrix, "rows", task))

    summary = run_pipeline(micro_experiment(), workdir, analyze=False)
    assert summary.trained == [] and sorted(summary.reused_rows) == sorted(TASKS) and summary.base_scores_reused
    for name, value in _arrays(os.path.join(first.matrix_path)).items():
        np.testing.assert_array_equal(_arrays(summary.matrix_path)[name], value)
    assert os.path.isfile(os.path.join(matrix, "base_nll", base))
    assert all(os.listdir(os.path.join(matrix, "rows", task)) for task in TASKS)  # copied to the new layout


def test_experiment_directories_and_report_links(tmp_path):
    workdir = str(tmp_path)
    a = resolve_experiment(workdir, "my run/1", "a" * 16)
    assert a.directory == os.path.join(workdir, "experiments", a.name) and "/" not in a.name
    os.makedirs(a.directory)
    with open(os.path.join(a.directory, "experiment.json"), "w") as f:
        json.dump({"fingerprint": "a" * 16}, f)
    assert resolve_experiment(workdir, "my run/1", "a" * 16) == a
    b = resolve_experiment(workdir, "my run/1", "b" * 16)
    assert b.name == a.name + "-" + "b" * 8
    text = "![h](analysis/heatmap.png) [x](https://e.org/a) [y](#top) ![r](replay/replay.png) `matrix/f.npz`"
    assert relocate_links(text, "experiments/demo") == (
        "![h](experiments/demo/analysis/heatmap.png) [x](https://e.org/a) [y](#top) "
        "![r](experiments/demo/replay/replay.png) `matrix/f.npz`")
