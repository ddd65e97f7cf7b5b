"""`forgetting-jax analyze` end to end (a fresh process, as users run it), and its error on a bad
file (in this process: the same command, its exit status and stderr)."""

import json

import numpy as np
import pytest

from forgetting_jax import cli
from forgetting_jax.analysis import planted
from test_support import ROOT, run_command


def _analyze(*args):
    return run_command("analyze", *args)


@pytest.mark.slow
def test_analyze_writes_fits_and_figures(tmp_path):
    z = planted.planted_matrix(10, 400, kind="low_rank", rank=2, noise=0.05, seed=0)
    rng = np.random.default_rng(0)
    path = tmp_path / "m.npz"
    np.savez(path, Z=z, tasks=np.array([f"t{i}" for i in range(10)]),
             example_sources=np.array(["a", "b"])[rng.integers(0, 2, 400)],
             task_embeddings=rng.normal(size=(10, 3)), example_embeddings=rng.normal(size=(400, 3)),
             task_gradients=rng.normal(size=(10, 5)), example_gradients=rng.normal(size=(400, 5)))
    out = tmp_path / "out"
    proc = _analyze(f"--matrix={path}", f"--output={out}", "--max_rank=4")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "fits.json").read_text())
    assert res["r2"]["svd"]["2"] > 0.98 > res["r2"]["svd"]["1"]
    assert res["r2"]["additive"] >= max(res["r2"]["item_only"], res["r2"]["task_only"]) - 1e-3
    assert len(res["components"]) == 4 and "enrichment" in res
    measures = ["representation_cosine", "gradient_product", "gradient_cosine"]
    assert list(res["similarity"]) == measures
    sim = json.loads((out / "similarity.json").read_text())
    assert list(sim["measures"]) == measures and sim["matrix"] == str(path) and sim["shape"] == [10, 400]
    assert {k: sim["r2"][k] for k in ("item_only", "task_only", "additive", "multiplicative", "svd")} == {
        k: res["r2"][k] for k in ("item_only", "task_only", "additive", "multiplicative", "svd")}
    assert sim["paper"]["olmo-1b"]["sentencebert"] == {"pearson": 0.054, "spearman": 0.074}
    for name, m in sim["measures"].items():
        assert m["count"] == 4000 and len(m["per_task"]) == 10 and -1 <= m["spearman"] <= 1, name
        assert res["similarity"][name] == {k: m[k] for k in ("pearson", "spearman", "count")}
    for name in ("heatmap.png", "r2_by_rank.png", "components.png", "similarity.png"):
        assert (out / name).stat().st_size > 1000


def _run_in_process(capsys, *args):
    code = 0
    try:
        cli.run(["forgetting-jax", "analyze", *args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return code, capsys.readouterr().err


def test_analyze_embedder_needs_the_experiment(tmp_path, capsys):
    path = tmp_path / "m.npz"
    np.savez(path, Z=np.zeros((3, 4)), tasks=np.array(["a", "b", "c"]))
    code, err = _run_in_process(capsys, f"--matrix={path}", f"--output={tmp_path / 'out'}", f"--embedder={tmp_path}")
    assert code == 2 and "--embedder embeds the texts" in err and "pass --config and --workdir" in err, err
    code, err = _run_in_process(capsys, f"--workdir={tmp_path}", f"--output={tmp_path / 'out'}")
    assert code == 2 and "--workdir needs --config" in err, err
    code, err = _run_in_process(capsys, f"--output={tmp_path / 'out'}")
    assert code == 2 and "give --matrix=M.npz, or --config and --workdir" in err, err
    code, err = _run_in_process(capsys, f"--config={ROOT}/configs/demo.py", f"--workdir={tmp_path / 'W'}",
                                f"--output={tmp_path / 'out'}")
    assert code == 1 and "has no matrix in" in err and "forgetting-jax run" in err, err
    assert not (tmp_path / "out").exists()


def test_analyze_bad_file(tmp_path, capsys):
    path = tmp_path / "m.npz"
    np.savez(path, Z=np.zeros((3, 4)))
    code = 0
    try:
        cli.run(["forgetting-jax", "analyze", f"--matrix={path}", f"--output={tmp_path / 'out'}"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    err = capsys.readouterr().err
    assert code != 0 and "missing field 'tasks'" in err, err
    assert not (tmp_path / "out").exists()


def test_analyze_counts_nonfinite_entries(tmp_path):
    z = planted.planted_matrix(6, 60, kind="low_rank", rank=1, noise=0.05, seed=1)
    z[2, [0, 5]] = np.inf  # a diverged run
    z[4, 9] = -np.inf
    z[2, 7] = np.nan  # a missing score
    z[0, 1:4] = np.nan
    path = tmp_path / "m.npz"
    np.savez(path, Z=z, tasks=np.array([f"t{i}" for i in range(6)]))
    out = tmp_path / "out"
    proc = _analyze(f"--matrix={path}", f"--output={out}", "--max_rank=2")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "fits.json").read_text())
    assert res["nonfinite"] == {"count": 7, "nan": 4, "posinf": 2, "neginf": 1, "total": 360,
                                "rows_affected": {"t0": 3, "t2": 3, "t4": 1}}
    assert res["observed_fraction"] == pytest.approx(353 / 360)
    assert res["mean"] is not None and np.isfinite(res["mean"])
    assert all(np.isfinite(v) for v in res["r2"]["svd"].values())
    log = proc.stdout + proc.stderr
    assert ("has 7 non-finite entries of 360 (2 +inf, 1 -inf, 4 NaN) in 3 tasks "
            "(t0: 3, t2: 3, t4: 1); they are left out of every fit and metric") in log, log
    assert "WARNING" in log.split("non-finite entries")[0].splitlines()[-1], log
