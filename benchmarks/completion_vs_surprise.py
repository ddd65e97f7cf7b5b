"""Forgetting prediction: forgetting_jax against scikit-surprise on the paper's protocol.

Both sides see the same matrices, test tasks and observed columns (k = 30 per test task and
seed, drawn by forgetting_jax's protocol) and are scored on the same unobserved entries.
surprise is run as the reference implementation runs it: tasks are users, the test task a new
user with k ratings, one fit per (test task, seed) of BaselineOnly (ALS of biases, reg_i 10,
reg_u 15, 10 epochs), KNNBaseline (k 40, pearson_baseline similarity, shrinkage 100, user
based) and SVD (100 factors, 20 epochs, lr 0.005, reg 0.02), counterparts of additive, knn and
als. surprise's time counts fit and prediction only (building its Trainset is left out, which
favours it); forgetting_jax's counts the whole protocol (fits, draws, completion, metrics).

  python benchmarks/completion_vs_surprise.py                 # accuracy + speed
  python benchmarks/completion_vs_surprise.py --scale         # + 1,000 x 1,000,000 via the CLI
  python benchmarks/completion_vs_surprise.py --scale --write # + update BENCHMARKS.md

Needs `pip install scikit-surprise` (a benchmark-only dependency).
"""

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from forgetting_jax.analysis import fits, planted  # noqa: E402
from forgetting_jax.analysis.chunks import ColumnChunks  # noqa: E402
from forgetting_jax.predict import metrics, protocol, registry  # noqa: E402

PAIRS = {"additive": "BaselineOnly", "knn": "KNNBaseline", "als": "SVD"}
SECTION = "## Matrix completion vs surprise"


def make_matrix(m: int, n: int, seed: int) -> np.ndarray:
    """Forgetting-shaped planted matrix (additive + multiplicative + weaker low-rank + noise)."""
    return planted.planted_matrix(m, n, kind="forgetting", rank=4, noise=0.6, seed=seed)


def r2_profile(z: np.ndarray) -> list[float]:
    return [round(float(r), 3) for r in fits.truncated_svd(ColumnChunks(z), 5).r2_K]


# --------------------------------------------------------------------------------------------
# surprise side


def surprise_trainset(train_MxN: np.ndarray, obs_idx: np.ndarray, obs_val: np.ndarray):
    """Training tasks as users 0..M-1 and the test task as user M with its k ratings."""
    from surprise import Trainset

    m, n = train_MxN.shape
    ur, ir = defaultdict(list), defaultdict(list)
    n_ratings = 0
    for u in range(m):
        ok = np.flatnonzero(np.isfinite(train_MxN[u]))
        ur[u] = list(zip(ok.tolist(), train_MxN[u, ok].astype(np.float64).tolist()))
        n_ratings += len(ok)
    ur[m] = list(zip(obs_idx.tolist(), obs_val.astype(np.float64).tolist()))
    n_ratings += len(obs_idx)
    for u, ratings in ur.items():
        for i, r in ratings:
            ir[i].append((u, r))
    return Trainset(ur, ir, m + 1, n, n_ratings, (-100.0, 100.0),
                    {u: u for u in range(m + 1)}, {j: j for j in range(n)})


def surprise_algorithm(name: str, seed: int):
    import surprise

    if name == "BaselineOnly":
        return surprise.BaselineOnly(bsl_options={"method": "als", "reg_i": 10, "reg_u": 15,
                                                  "n_epochs": 10}, verbose=False)
    if name == "KNNBaseline":
        return surprise.KNNBaseline(k=40, sim_options={"name": "pearson_baseline",
                                                       "user_based": True, "shrinkage": 100},
                                    verbose=False)
    return surprise.SVD(n_factors=100, n_epochs=20, lr_all=0.005, reg_all=0.02,
                        random_state=seed)


def surprise_pair(name: str, trainset, n: int, seed: int) -> tuple[np.ndarray, float]:
    algo = surprise_algorithm(name, seed)
    t0 = time.perf_counter()
    algo.fit(trainset)
    user = trainset.n_users - 1
    if name == "KNNBaseline":
        pred = [algo.estimate(user, j)[0] for j in range(n)]
    else:
        pred = [algo.estimate(user, j) for j in range(n)]
    return np.asarray(pred, np.float32), time.perf_counter() - t0


def pair_draws(z: np.ndarray, test_idx: np.ndarray, seeds: int, k: int):
    """The observed columns forgetting_jax's protocol draws for each (task, seed) pair."""
    out = []
    for t in test_idx:
        for s in range(seeds):
            key = protocol.pair_keys(0, np.array([s]), np.array([t]))[0]
            truth = jnp.asarray(z[t])
            idx = np.asarray(protocol.draw_columns(key, jnp.isfinite(truth), k))
            out.append((int(t), s, idx))
    return out


def pair_rmse(pred: np.ndarray, truth: np.ndarray, idx: np.ndarray) -> float:
    ev = np.asarray(metrics.eval_mask(jnp.asarray(truth), jnp.asarray(idx)))
    return float(np.sqrt(np.mean((pred[ev] - truth[ev]) ** 2)))


def run_surprise(z, test_idx, draws, log):
    """Per algorithm: per-pair RMSE and seconds over the given draws."""
    rows = np.ones(z.shape[0], bool)
    rows[test_idx] = False
    train = z[rows]
    out = {name: {"rmse": [], "seconds": []} for name in PAIRS.values()}
    for i, (t, s, idx) in enumerate(draws):
        trainset = surprise_trainset(train, idx, z[t, idx])
        for name in PAIRS.values():
            pred, sec = surprise_pair(name, trainset, z.shape[1], s)
            out[name]["rmse"].append(pair_rmse(pred, z[t], idx))
            out[name]["seconds"].append(sec)
        log(f"  surprise pair {i + 1}/{len(draws)}: " + ", ".join(
            f"{n} {out[n]['seconds'][-1]:.2f}s" for n in PAIRS.values()))
    return out


# --------------------------------------------------------------------------------------------
# forgetting_jax side


def run_ours(z, test_idx, seeds, k, methods=tuple(PAIRS) + ("multiplicative", "train_mean")):
    t0 = time.perf_counter()
    run = protocol.run_protocol(z, test_idx, registry.build_methods(methods), k=k, seeds=seeds,
                                log=lambda s: None)
    return run, time.perf_counter() - t0


def accuracy(args, log):
    m, n = args.accuracy_shape
    z = make_matrix(m, n, seed=1)
    test_idx = protocol.select_test_tasks([str(i) for i in range(m)],
                                          test_fraction=args.test_tasks / m)
    log(f"accuracy: {m} x {n}, R^2 rank 1..5 {r2_profile(z)}, {len(test_idx)} test tasks x "
        f"{args.accuracy_seeds} seeds")
    run, seconds = run_ours(z, test_idx, args.accuracy_seeds, args.k)
    draws = pair_draws(z, test_idx, args.accuracy_seeds, args.k)
    ref = run_surprise(z, test_idx, draws, log if args.verbose else lambda s: None)
    rows = []
    for ours, theirs in PAIRS.items():
        rows.append({"method": ours,
                     "rmse": float(np.mean(run["methods"][ours]["metrics"]["rmse"])),
                     "surprise": theirs, "surprise_rmse": float(np.mean(ref[theirs]["rmse"]))})
    for extra in ("multiplicative", "train_mean"):
        rows.append({"method": extra, "rmse": float(np.mean(
            run["methods"][extra]["metrics"]["rmse"])), "surprise": None, "surprise_rmse": None})
    return {"shape": [m, n], "r2": r2_profile(z), "test_tasks": len(test_idx),
            "seeds": args.accuracy_seeds, "rows": rows, "ours_seconds": seconds,
            "surprise_seconds": {k: float(np.sum(v["seconds"])) for k, v in ref.items()}}


def speed(args, log):
    m, n = args.speed_shape
    z = make_matrix(m, n, seed=2)
    test_idx = protocol.select_test_tasks([str(i) for i in range(m)],
                                          test_fraction=args.test_tasks / m)
    n_pairs = len(test_idx) * args.speed_seeds
    log(f"speed: {m} x {n}, {len(test_idx)} test tasks x {args.speed_seeds} seeds")
    times, per_method, run = [], defaultdict(list), None
    for r in range(args.runs):
        run, sec = run_ours(z, test_idx, args.speed_seeds, args.k, methods=tuple(PAIRS))
        times.append(sec)
        for name in PAIRS:
            per_method[name].append(run["methods"][name]["seconds"])
        log(f"  forgetting_jax run {r + 1}: {sec:.2f}s " + ", ".join(
            f"{name} {run['methods'][name]['seconds']:.2f}s" for name in PAIRS))
    draws = pair_draws(z, test_idx, args.speed_seeds, args.k)
    step = max(1, len(draws) // args.surprise_pairs)
    subset = draws[::step][: args.surprise_pairs]
    ref = run_surprise(z, test_idx, subset, log)
    per_pair = {name: statistics.median(v["seconds"]) for name, v in ref.items()}
    projected = sum(per_pair.values()) * n_pairs
    index = {(t, s): p for p, (t, s) in enumerate(zip(run["pairs"]["task"], run["pairs"]["seed"]))}
    sel = [index[(t, s)] for t, s, _ in subset]
    rows = [{"method": ours, "surprise": theirs,
             "rmse": float(np.mean(run["methods"][ours]["metrics"]["rmse"][sel])),
             "rmse_all_pairs": float(np.mean(run["methods"][ours]["metrics"]["rmse"])),
             "surprise_rmse": float(np.mean(ref[theirs]["rmse"])),
             "ours_seconds": float(statistics.median(per_method[ours])),
             "surprise_seconds_per_pair": per_pair[theirs]} for ours, theirs in PAIRS.items()]
    return {"shape": [m, n], "test_tasks": len(test_idx), "seeds": args.speed_seeds,
            "pairs": n_pairs, "surprise_pairs_timed": len(subset), "ours_times": times,
            "ours_median": statistics.median(times), "ours_first": times[0],
            "surprise_projected": projected, "rows": rows,
            "ratio_median": projected / statistics.median(times),
            "ratio_first": projected / times[0]}


def scale(args, log):
    m, n = args.scale_shape
    with tempfile.TemporaryDirectory(dir=args.scale_dir) as tmp:
        path = os.path.join(tmp, "m.npz")
        t0 = time.perf_counter()
        z = make_matrix(m, n, seed=3)
        np.savez(path, Z=z, tasks=np.array([f"task{i}" for i in range(m)]))
        del z
        log(f"scale: wrote {m} x {n} float32 in {time.perf_counter() - t0:.1f}s")
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "forgetting_jax", "predict", f"--matrix={path}",
               f"--test_fraction={args.scale_test_rows / m}", "--seeds=1", f"--k={args.k}",
               f"--methods={','.join(args.scale_methods)}", f"--output={out}", "--per_task=false"]
        env = dict(os.environ, PYTHONPATH=ROOT)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        res = json.load(open(out))
    log(f"  wall {wall:.1f}s, peak RSS {peak_gb:.2f} GiB")
    return {"shape": [m, n], "test_rows": args.scale_test_rows, "wall_seconds": wall,
            "peak_rss_gib": peak_gb, "methods": {
                k: {"seconds": v["seconds"], "fit_seconds": v["fit_seconds"], "rmse": v["rmse"]}
                for k, v in res["methods"].items()},
            "settings": res["settings"]}


# --------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    return (f"{os.cpu_count()}-core CPU ({cpu}), {mem:.0f} GiB RAM, no GPU; jax {jax.__version__}"
            f" (CPU), Python {platform.python_version()}")


def report(res) -> str:
    lines = [SECTION, "",
             f"`python benchmarks/completion_vs_surprise.py --scale --write`, "
             f"{time.strftime('%Y-%m-%d')}, on a {machine()}.", ""]
    try:
        import surprise
        lines.append(f"scikit-surprise {surprise.__version__} (installed from PyPI; the "
                     "reference implementation's library). Same matrices, test tasks and "
                     "observed columns (k = 30) on both sides; RMSE on the unobserved entries, "
                     "mean over (test task, seed) pairs. Matrices are planted with the shape "
                     "of real forgetting matrices (additive + multiplicative + weaker low-rank "
                     "parts + noise); their rank-1..5 R^2 is listed.")
    except ImportError:
        pass
    lines.append("")
    if "accuracy" in res:
        a = res["accuracy"]
        lines += [f"Accuracy: {a['shape'][0]} x {a['shape'][1]} (rank-1..5 R^2 {a['r2']}), "
                  f"{a['test_tasks']} test tasks x {a['seeds']} seeds.", "",
                  "| forgetting_jax | RMSE | surprise | RMSE | |",
                  "| --- | --- | --- | --- | --- |"]
        for r in a["rows"]:
            if r["surprise"]:
                verdict = "equal or better" if r["rmse"] <= r["surprise_rmse"] + 1e-4 else "worse"
                lines.append(f"| {r['method']} | {r['rmse']:.4f} | {r['surprise']} | "
                             f"{r['surprise_rmse']:.4f} | {verdict} |")
            else:
                lines.append(f"| {r['method']} | {r['rmse']:.4f} | - | - | |")
        lines.append("")
    if "speed" in res:
        s = res["speed"]
        lines += [f"Speed: {s['shape'][0]} x {s['shape'][1]}, {s['test_tasks']} test tasks x "
                  f"{s['seeds']} seeds = {s['pairs']} fits per method. forgetting_jax: the "
                  f"whole protocol for additive, knn and als, median of {len(s['ours_times'])} "
                  f"runs {s['ours_median']:.2f}s (first run, with compilation, "
                  f"{s['ours_first']:.2f}s). surprise: median fit+predict time per pair over "
                  f"{s['surprise_pairs_timed']} pairs, times {s['pairs']} pairs = "
                  f"{s['surprise_projected']:.0f}s projected (running all {s['pairs']} would "
                  f"take that long).", "",
                  "| method | RMSE, timed pairs | surprise RMSE, same pairs | RMSE, all pairs "
                  "| forgetting_jax s, all pairs | surprise s / pair |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in s["rows"]:
            lines.append(f"| {r['method']} vs {r['surprise']} | {r['rmse']:.4f} | "
                         f"{r['surprise_rmse']:.4f} | {r['rmse_all_pairs']:.4f} | "
                         f"{r['ours_seconds']:.2f} | {r['surprise_seconds_per_pair']:.2f} |")
        lines += ["", f"Speed-up: **{s['ratio_median']:.0f}x** (median runs), "
                      f"{s['ratio_first']:.0f}x counting the first run's compilation; goal "
                      f"50x: {'met' if s['ratio_first'] >= 50 else 'missed'}.", ""]
    if "scale" in res:
        c = res["scale"]
        per = ", ".join(f"{k} {v['seconds']:.1f}s (fit {v['fit_seconds']:.1f}s)"
                        for k, v in c["methods"].items())
        ok = c["wall_seconds"] <= 120 and c["peak_rss_gib"] <= 12
        lines += [f"Scale: `forgetting-jax predict` on a {c['shape'][0]} x {c['shape'][1]:,} "
                  f"float32 matrix file ({c['shape'][0] * c['shape'][1] * 4 / 1e9:.1f} GB), "
                  f"{c['test_rows']} test rows, k = 30, 1 seed, methods "
                  f"{', '.join(c['methods'])}: wall **{c['wall_seconds']:.0f}s** for the whole "
                  f"command (start-up, loading the file, every fit, completion and metrics), "
                  f"peak RSS **{c['peak_rss_gib']:.1f} GiB**. Per method: {per}. AUC and "
                  f"Spearman there use a fixed subset of {c['settings']['rank_metric_columns']:,}"
                  f" columns. Goal (2 minutes, 12 GB): {'met' if ok else 'missed'}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: str, text: str) -> None:
    from forgetting_jax.utils.io import write_text

    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else (
        old.rstrip() + "\n\n" + text)
    write_text(path, new.rstrip() + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--test_tasks", type=int, default=20)
    p.add_argument("--accuracy_shape", type=int, nargs=2, default=[66, 2000])
    p.add_argument("--accuracy_seeds", type=int, default=10)
    p.add_argument("--speed_shape", type=int, nargs=2, default=[200, 20000])
    p.add_argument("--speed_seeds", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--surprise_pairs", type=int, default=6)
    p.add_argument("--scale", action="store_true", help="run the 1,000 x 1,000,000 check")
    p.add_argument("--scale_shape", type=int, nargs=2, default=[1000, 1_000_000])
    p.add_argument("--scale_test_rows", type=int, default=100)
    p.add_argument("--scale_methods", default="additive,multiplicative,als,knn")
    p.add_argument("--scale_dir", default=None, help="where to write the temporary matrix")
    p.add_argument("--skip", default="", help="comma list of parts to skip: accuracy,speed")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.scale_methods = args.scale_methods.split(",")

    def log(s):
        print(s, flush=True)

    skip = set(args.skip.split(",")) - {""}
    res = {}
    if "accuracy" not in skip:
        res["accuracy"] = accuracy(args, log)
    if "speed" not in skip:
        res["speed"] = speed(args, log)
    if args.scale:
        res["scale"] = scale(args, log)
    text = report(res)
    print("\n" + text)
    if args.json:
        json.dump(res, open(args.json, "w"), indent=1, default=float)
    if args.write:
        write_section(os.path.join(ROOT, "BENCHMARKS.md"), text)


if __name__ == "__main__":
    main()
