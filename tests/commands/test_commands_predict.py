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
