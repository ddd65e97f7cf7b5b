"""`forgetting-jax predict` end to end (a fresh process, as users run it), and its errors on bad
input (in this process: the same command, its exit status and stderr)."""

import json

import numpy as np
import pytest

from forgetting_jax import cli
from forgetting_jax.analysis import planted
from test_support import run_command


def _predict(*args):
    return run_command("predict", *args)


def _predict_here(capsys, *args):
    """(exit status, stderr) of `forgetting-jax predict` run in this process."""
    code = 0
    try:
        cli.run(["forgetting-jax", "predict", *args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.npz"
    z = planted.planted_matrix(12, 300, kind="forgetting", noise=0.3, seed=0, missing=0.02)
    rng = np.random.default_rng(0)
    np.savez(path, Z=z, tasks=np.array([f"task{i}" for i in range(12)]),
             task_embeddings=rng.normal(size=(12, 4)).astype(np.float32),
             example_embeddings=rng.normal(size=(300, 4)).astype(np.float32))
    return str(path)


@pytest.mark.slow
def test_predict_writes_contract(matrix, tmp_path):
    out = tmp_path / "r.json"
    proc = _predict(f"--matrix={matrix}", "--test_tasks=task1,task5", "--k=20", "--seeds=2",
                    "--methods=additive,observed_mean,rep_sim", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["test_tasks"] == ["task1", "task5"]
    for name in ("additive", "observed_mean", "rep_sim"):
        entry = res["methods"][name]
        for key in ("rmse", "f1", "precision", "recall", "auc", "spearman", "seconds"):
            assert key in entry
        assert entry["rmse"] > 0 and set(entry["per_task"]) == {"task1", "task5"}
    assert res["methods"]["observed_mean"]["spearman"] is None  # constant prediction
    assert "rep_sim:" in proc.stderr  # progress per method


@pytest.mark.parametrize("args,message", [
    (["--matrix=/nonexistent.npz", "--test_fraction=0.3"], "no such file"),
    (["--test_tasks=nope"], "unknown test task"),
    (["--test_tasks=task3", "--k=400"], "--k=400 observed columns requested, but test task "
                                        "'task3'"),
    (["--test_fraction=0.3", "--methods=additive,magic"], "unknown method 'magic'"),
])
def test_predict_bad_input(matrix, tmp_path, capsys, args, message):
    out = tmp_path / "r.json"
    if not any(a.startswith("--matrix") for a in args):
        args = [f"--matrix={matrix}"] + args
    code, err = _predict_here(capsys, *args, f"--output={out}")
    assert code != 0 and message in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def full_matrix(tmp_path_factory):
    """A matrix file with every representation array (as `run` writes them) and non-finite
    entries in one training row (+inf, -inf, NaN)."""
    path = tmp_path_factory.mktemp("full") / "m.npz"
    m, n, s, d = 10, 200, 6, 8
    z = planted.planted_matrix(m, n, kind="forgetting", noise=0.3, seed=1)
    z[9, :3] = [np.inf, -np.inf, np.nan]
    rng = np.random.default_rng(1)
    count = rng.integers(1, s + 1, size=m).astype(np.int32)
    np.savez(path, Z=z, tasks=np.array([f"t{i}" for i in range(m)]),
             task_embeddings=rng.normal(size=(m, d)).astype(np.float32),
             example_embeddings=rng.normal(size=(n, d)).astype(np.float32),
             example_last_hidden=rng.normal(size=(n, d)).astype(np.float32),
             task_example_last_hidden=rng.normal(size=(m, s, d)).astype(np.float32),
             task_example_count=count)
    return str(path)


def test_predict_every_method_headline_and_nonfinite(full_matrix, tmp_path, capsys):
    """By default every method the file allows runs (rep_sim and rep_dot included); the output
    names the headline (pooled) figures and the winner, and counts the non-finite entries."""
    out = tmp_path / "r.json"
    code, err = _predict_here(capsys, f"--matrix={full_matrix}", "--test_tasks=t0,t3", "--k=10", "--seeds=2",
                              "--rep_dot_steps=50", f"--output={out}")
    assert code == 0, err
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {"additive", "multiplicative", "als", "knn", "rep_sim", "rep_dot",
                                   "train_mean", "observed_mean"}
    assert res["headline"]["metrics"] == "pooled"
    pooled = {name: e["pooled"]["rmse"] for name, e in res["methods"].items() if name != "train_mean"}
    assert res["best"]["rmse"] == min(pooled, key=pooled.get)
    assert res["nonfinite"]["train"] == {"count": 3, "nan": 1, "posinf": 1, "neginf": 1,
                                         "total": 8 * 200, "rows_affected": {"t9": 3}}
    assert res["nonfinite"]["test"]["count"] == 0
    assert "3 non-finite entries" in err and "t9: 3" in err
    assert "best:" in err and "headline: pooled" in err
    assert res["settings"]["rep_dot"]["steps"] == 50


def test_predict_reference_sampling_uses_the_reference_columns(full_matrix, tmp_path, capsys):
    """--sampling=reference: every test task of a seed sees the columns default_rng(seed).choice(N,
    k) (observed_mean then predicts the mean of exactly those entries), and --score_observed
    scores every entry of the row."""
    out = tmp_path / "r.json"
    code, err = _predict_here(capsys, f"--matrix={full_matrix}", "--test_tasks=t2", "--k=7", "--seeds=3",
                              "--methods=observed_mean", "--sampling=reference", "--score_observed",
                              "--per_task=false", f"--output={out}")
    assert code == 0, err
    res = json.loads(out.read_text())
    z = np.load(full_matrix)["Z"][2].astype(np.float64)
    errors = []
    for seed in range(3):
        cols = np.random.default_rng(seed).choice(np.arange(z.shape[0]), 7)
        errors.append((z - z[cols].mean()) ** 2)  # scored on all 200 entries
    expected = float(np.sqrt(np.mean(np.concatenate(errors))))
    assert res["methods"]["observed_mean"]["pooled"]["rmse"] == pytest.approx(expected, rel=1e-5)
    assert res["settings"]["sampling"] == "reference" and res["settings"]["score_observed"] is True


def test_predict_rep_dot_needs_the_last_token_representations(matrix, tmp_path, capsys):
    code, err = _predict_here(capsys, f"--matrix={matrix}", "--test_fraction=0.3", "--methods=rep_dot",
                              f"--output={tmp_path / 'r.json'}")
    assert code != 0 and "rep_dot needs task_example_last_hidden" in err, err
