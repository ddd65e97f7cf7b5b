"""Forgetting prediction: forgetting_jax against scikit-surprise on the paper's protocol.

Both sides see the same matrices, test tasks and observed columns (k = 30 per test task and
seed) and are scored on the same unobserved entries. surprise is run as the paper's code runs
it: tasks are users, the test task a new user with its k ratings, one fit per (test task, seed)
on the training rows plus that row, predictions read with `predict(user, item).est` (rating
scale (-100, 100), to which surprise clips `est`). `--reference` picks which version of the
paper's code, with its settings and protocol:

- final (default): the paper's final code, AuCson/low-rank-forgetting (run_matrix_completion.py
  with the methods of scripts/mat_completion/run_all.sh):
  BaselineOnly(bsl_options={'n_epochs': 1000, 'method': 'sgd'}), KNNBaseline(bsl_options=the
  same) (k 40, MSD similarity, user based), KNNBasic() (listed too; run_all.sh leaves it out),
  SVD(n_epochs=1000, n_factors=5, lr_all=0.005, reg_all=0, init_std_dev=0.001). Its protocol:
  for seed s the k observed columns are default_rng(s).choice(N, k) (with replacement), the same
  for every test task (forgetting_jax's `run_protocol(sampling="reference")`); RMSE over the
  unobserved columns, pooled over the test tasks of a seed, then the mean over seeds. 1000 SGD
  epochs make each surprise fit slow, so this reference runs fewer seeds and surprise pairs by
  default (see --accuracy_seeds, --surprise_pairs).
- first: the first version's code, INK-USC/lm-forgetting-prediction-code
  (src/run_matrix_completion.py): BaselineOnly(bsl_options={'n_epochs': 100}) (ALS of the
  biases, reg_i 10, reg_u 15), KNNBaseline() and KNNBasic() (k 40, MSD similarity, user based,
  default baselines), SVD(n_epochs=100) (100 factors, biased, lr 0.005, reg 0.02, init std
  0.1), on forgetting_jax's own protocol: k distinct columns drawn per (task, seed), RMSE over
  the unobserved entries, mean over (task, seed) pairs.

SVD is seeded per pair (random_state = seed), which both references leave unseeded.
Counterparts: additive ~ BaselineOnly, knn ~ KNNBaseline (KNNBasic listed too), als ~ SVD.
surprise's time counts fit and prediction only (building its Trainset is left out, which
favours it).

forgetting_jax is timed two ways:
- fold-in: the protocol (`forgetting_jax.predict.protocol.run_protocol`): one fit on the
  training rows per method, then every pair folded in; the whole protocol is timed (fits,
  draws, completion, metrics);
- refit: `forgetting_jax.predict.refit.refit_predict`, one cold-started fit per pair on the
  training rows plus the pair's k entries, then that row's prediction, as surprise runs.

  python benchmarks/completion_vs_surprise.py                 # final reference: accuracy + speed
  python benchmarks/completion_vs_surprise.py --reference=first   # the first version's
  python benchmarks/completion_vs_surprise.py --scale         # + 1,000 x 1,000,000 via the CLI
  python benchmarks/completion_vs_surprise.py --scale --write # + update BENCHMARKS.md
  python benchmarks/completion_vs_surprise.py --json R.json   # + the raw results
  python benchmarks/completion_vs_surprise.py --report_from R.json --write  # report only

--write rewrites the subsection of the reference it ran in BENCHMARKS.md's section and keeps
the other reference's subsection as it is there (with its own command and date). Without
--scale it keeps the Scale paragraph already there, marked as from an earlier run. Needs
`pip install scikit-surprise` (a benchmark-only dependency).
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
from forgetting_jax.predict import metrics, protocol, refit, registry  # noqa: E402

PAIRS = {"additive": "BaselineOnly", "knn": "KNNBaseline", "als": "SVD"}  # ours -> counterpart
SURPRISE = ("BaselineOnly", "KNNBaseline", "KNNBasic", "SVD")
EXTRA = {"KNNBasic": "knn"}  # further surprise rows and the method they are set against
SECTION = "## Matrix completion vs surprise"
REFERENCES = {  # --reference -> how the tables name it
    "final": "the paper's final code, AuCson/low-rank-forgetting",
    "first": "the first version's code, INK-USC/lm-forgetting-prediction-code",
}
DEFAULTS = {  # --reference -> (accuracy seeds, surprise pairs timed in the speed part)
    "final": (2, 1),
    "first": (5, 4),
}
SUBSECTION = "### Reference: "


def make_matrix(m: int, n: int, seed: int) -> np.ndarray:
    """Forgetting-shaped planted matrix (additive + multiplicative + weaker low-rank + noise)."""
    return planted.planted_matrix(m, n, kind="forgetting", rank=4, noise=0.6, seed=seed)


def r2_profile(z: np.ndarray) -> list[float]:
    return [round(float(r), 3) for r in fits.truncated_svd(ColumnChunks(z), 5).r2_K]


def split(m: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    test_idx = protocol.select_test_tasks([str(i) for i in range(m)], test_fraction=n_test / m)
    rows = np.ones(m, bool)
    rows[test_idx] = False
    return test_idx, rows


def pair_draws(z: np.ndarray, test_idx: np.ndarray, seeds: int, k: int, reference: str = "first"):
    """The observed columns forgetting_jax's protocol draws for each (task, seed) pair,
    task-major like the protocol's pairs: its own draws (first) or, for the final reference,
    `sampling="reference"`'s (default_rng(seed).choice(N, k), the same for every task; a
    column may repeat)."""
    out = []
    ref_cols = protocol.reference_columns(np.arange(seeds), z.shape[1], k) if reference == "final" else None
    for t in test_idx:
        for s in range(seeds):
            if ref_cols is not None:
                out.append((int(t), s, ref_cols[s]))
                continue
            key = protocol.pair_keys(0, np.array([s]), np.array([t]))[0]
            truth = jnp.asarray(z[t])
            idx = np.asarray(protocol.draw_columns(key, jnp.isfinite(truth), k))
            out.append((int(t), s, idx))
    return out


def given_columns(idx: np.ndarray, reference: str) -> np.ndarray:
    """The columns surprise and the refit are given: the final code's masked row holds each
    drawn column once (in column order, as its data frame lists them); the first reference's
    draws are distinct already and are passed as drawn."""
    return np.unique(idx) if reference == "final" else idx


def pair_rmse(pred: np.ndarray, truth: np.ndarray, idx: np.ndarray) -> float:
    ev = np.asarray(metrics.eval_mask(jnp.asarray(truth), jnp.asarray(idx)))
    return float(np.sqrt(np.mean((pred[ev] - truth[ev]) ** 2)))


def pair_sq_err(pred: np.ndarray, truth: np.ndarray, idx: np.ndarray) -> tuple[float, int]:
    """Sum of squared errors and count over the pair's unobserved entries (for pooling)."""
    ev = np.asarray(metrics.eval_mask(jnp.asarray(truth), jnp.asarray(idx)))
    err = pred[ev].astype(np.float64) - truth[ev].astype(np.float64)
    return float(np.sum(err * err)), int(ev.sum())


def score(reference: str, seeds: list[int], rmse: list[float], sq: list[float], n: list[float]) -> float:
    """One RMSE of a method over pairs: first, the mean per-pair RMSE; final, as the final
    code scores one seed (RMSE pooled over its test tasks), then the mean over seeds."""
    if reference == "first":
        return float(np.mean(rmse))
    per_seed = defaultdict(lambda: [0.0, 0.0])
    for s, e, c in zip(seeds, sq, n):
        per_seed[int(s)][0] += float(e)
        per_seed[int(s)][1] += float(c)
    return float(np.mean([np.sqrt(e / c) for e, c in per_seed.values()]))


def score_of(reference: str, draws, out: dict) -> float:
    """`score` of one method's per-pair results {"rmse", "sq", "n": [P]} over `draws`."""
    return score(reference, [s for _, s, _ in draws], out["rmse"], out["sq"], out["n"])


def spaced(items: list, count: int) -> list:
    """`count` items spread evenly over the list (all of them when count >= len)."""
    if count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


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


def surprise_algorithm(name: str, seed: int, reference: str = "first"):
    """The reference's settings (everything else surprise's defaults)."""
    import surprise

    if reference == "final":  # AuCson/low-rank-forgetting, run_matrix_completion.py
        sgd = {"n_epochs": 1000, "method": "sgd"}
        if name == "BaselineOnly":
            return surprise.BaselineOnly(bsl_options=dict(sgd), verbose=False)
        if name == "KNNBaseline":
            return surprise.KNNBaseline(bsl_options=dict(sgd), verbose=False)
        if name == "KNNBasic":
            return surprise.KNNBasic(verbose=False)
        if name == "SVD":
            return surprise.SVD(n_epochs=1000, n_factors=5, lr_all=0.005, reg_all=0,
                                init_std_dev=0.001, random_state=seed)
        raise ValueError(name)
    if name == "BaselineOnly":
        return surprise.BaselineOnly(bsl_options={"n_epochs": 100}, verbose=False)
    if name == "KNNBaseline":
        return surprise.KNNBaseline(verbose=False)
    if name == "KNNBasic":
        return surprise.KNNBasic(verbose=False)
    if name == "SVD":
        return surprise.SVD(n_epochs=100, random_state=seed)
    raise ValueError(name)


def surprise_pair(name: str, trainset, n: int, seed: int, reference: str = "first"
                  ) -> tuple[np.ndarray, float]:
    algo = surprise_algorithm(name, seed, reference)
    t0 = time.perf_counter()
    algo.fit(trainset)
    user = trainset.n_users - 1  # raw id = inner id here
    pred = [algo.predict(user, j).est for j in range(n)]
    return np.asarray(pred, np.float32), time.perf_counter() - t0


def run_surprise(z, rows, draws, log, reference="first"):
    """Per algorithm: per-pair RMSE, squared errors, counts and seconds over the given draws."""
    train = z[rows]
    out = {name: {"rmse": [], "sq": [], "n": [], "seconds": []} for name in SURPRISE}
    for i, (t, s, idx) in enumerate(draws):
        given = given_columns(idx, reference)
        trainset = surprise_trainset(train, given, z[t, given])
        for name in SURPRISE:
            pred, sec = surprise_pair(name, trainset, z.shape[1], s, reference)
            out[name]["rmse"].append(pair_rmse(pred, z[t], idx))
            sq, cnt = pair_sq_err(pred, z[t], idx)
            out[name]["sq"].append(sq)
            out[name]["n"].append(cnt)
            out[name]["seconds"].append(sec)
        log(f"  surprise pair {i + 1}/{len(draws)}: " + ", ".join(
            f"{n} {out[n]['seconds'][-1]:.2f}s" for n in SURPRISE))
    return out


# --------------------------------------------------------------------------------------------
# forgetting_jax side


def run_ours(z, test_idx, seeds, k, methods=tuple(PAIRS) + ("multiplicative", "train_mean"),
             reference="first"):
    """The protocol: forgetting_jax's own draws (first) or the final code's
    (`sampling="reference"`), scored on the unobserved entries either way."""
    sampling = "reference" if reference == "final" else "uniform"
    t0 = time.perf_counter()
    run = protocol.run_protocol(z, test_idx, registry.build_methods(methods), k=k, seeds=seeds,
                                log=lambda s: None, sampling=sampling, score_observed=False)
    return run, time.perf_counter() - t0


def run_refit(z, rows, draws, log, reference="first"):
    """Per method: per-pair RMSE, squared errors, counts and seconds of `refit_predict` over
    the given draws (in order, so the first pair of each method includes its compilation)."""
    train = z[rows]
    out = {}
    for name in PAIRS:
        rmse, sqs, cnts, seconds = [], [], [], []
        for t, s, idx in draws:
            given = given_columns(idx, reference)
            t0 = time.perf_counter()
            pred = refit.refit_predict(name, train, given, z[t, given])
            seconds.append(time.perf_counter() - t0)
            rmse.append(pair_rmse(pred, z[t], idx))
            sq, cnt = pair_sq_err(pred, z[t], idx)
            sqs.append(sq)
            cnts.append(cnt)
        out[name] = {"rmse": rmse, "sq": sqs, "n": cnts, "seconds": seconds}
        log(f"  refit {name}: {len(draws)} pairs, first {seconds[0]:.2f}s, median "
            f"{statistics.median(seconds):.3f}s, total {sum(seconds):.1f}s")
    return out


def protocol_rmse(run, pairs, reference="first") -> dict[str, float]:
    """The RMSE (`score`) of each method of a protocol run over the given (task, seed) pairs:
    first, the mean per-pair RMSE; final, pooled per seed, mean over seeds."""
    index = {(t, s): p for p, (t, s) in enumerate(zip(run["pairs"]["task"], run["pairs"]["seed"]))}
    sel = [index[(t, s)] for t, s, _ in pairs]
    if reference == "first":
        return {name: float(np.mean(res["metrics"]["rmse"][sel]))
                for name, res in run["methods"].items()}
    seeds = [s for _, s, _ in pairs]
    return {name: score(reference, seeds, res["metrics"]["rmse"][sel], res["metrics"]["sq_err"][sel],
                        res["metrics"]["n"][sel])
            for name, res in run["methods"].items()}


def accuracy(args, log):
    m, n = args.accuracy_shape
    z = make_matrix(m, n, seed=1)
    test_idx, rows = split(m, args.test_tasks)
    reference = args.reference
    log(f"accuracy ({reference} reference): {m} x {n}, R^2 rank 1..5 {r2_profile(z)}, "
        f"{len(test_idx)} test tasks x {args.accuracy_seeds} seeds")
    run, _ = run_ours(z, test_idx, args.accuracy_seeds, args.k, reference=reference)
    draws = pair_draws(z, test_idx, args.accuracy_seeds, args.k, reference)
    quiet = log if args.verbose else (lambda s: None)
    fold = protocol_rmse(run, draws, reference)
    ref_ours = run_refit(z, rows, draws, quiet, reference)
    ref = run_surprise(z, rows, draws, quiet, reference)
    return {"shape": [m, n], "r2": r2_profile(z), "test_tasks": len(test_idx),
            "seeds": args.accuracy_seeds, "pairs": len(draws),
            "foldin_rmse": fold,
            "refit_rmse": {k: score_of(reference, draws, v) for k, v in ref_ours.items()},
            "surprise_rmse": {k: score_of(reference, draws, v) for k, v in ref.items()},
            "refit_seconds": {k: float(np.sum(v["seconds"])) for k, v in ref_ours.items()},
            "surprise_seconds": {k: float(np.sum(v["seconds"])) for k, v in ref.items()}}


def speed(args, log):
    m, n = args.speed_shape
    z = make_matrix(m, n, seed=2)
    test_idx, rows = split(m, args.test_tasks)
    reference = args.reference
    n_pairs = len(test_idx) * args.speed_seeds
    log(f"speed ({reference} reference): {m} x {n}, {len(test_idx)} test tasks x "
        f"{args.speed_seeds} seeds")
    times, per_method, run = [], defaultdict(list), None
    for r in range(args.runs):
        run, sec = run_ours(z, test_idx, args.speed_seeds, args.k, methods=tuple(PAIRS),
                            reference=reference)
        times.append(sec)
        for name in PAIRS:
            per_method[name].append(run["methods"][name]["seconds"])
        log(f"  fold-in protocol run {r + 1}: {sec:.2f}s " + ", ".join(
            f"{name} {run['methods'][name]['seconds']:.2f}s" for name in PAIRS))
    draws = pair_draws(z, test_idx, args.speed_seeds, args.k, reference)
    refit_draws = spaced(draws, args.refit_pairs)
    surprise_draws = spaced(refit_draws, args.surprise_pairs)
    ours_refit = run_refit(z, rows, refit_draws, log, reference)
    ref = run_surprise(z, rows, surprise_draws, log, reference)
    on_s = [next(i for i, d in enumerate(refit_draws) if d is e) for e in surprise_draws]
    fold_s = protocol_rmse(run, surprise_draws, reference)
    fold_all = protocol_rmse(run, draws, reference)
    refit_med = {k: statistics.median(v["seconds"][1:] or v["seconds"])
                 for k, v in ours_refit.items()}
    surprise_med = {k: statistics.median(v["seconds"]) for k, v in ref.items()}
    rows_out = []
    for ours, theirs in list(PAIRS.items()) + [(v, k) for k, v in EXTRA.items()]:
        rows_out.append({
            "method": ours, "surprise": theirs,
            "foldin_rmse": fold_s[ours],
            "refit_rmse": score_of(reference, surprise_draws,
                                   {key: [ours_refit[ours][key][i] for i in on_s]
                                    for key in ("rmse", "sq", "n")}),
            "surprise_rmse": score_of(reference, surprise_draws, ref[theirs]),
            "foldin_rmse_all_pairs": fold_all[ours],
            "refit_rmse_timed_pairs": score_of(reference, refit_draws, ours_refit[ours]),
            "foldin_seconds": float(statistics.median(per_method[ours])),
            "refit_seconds_per_pair": refit_med[ours],
            "refit_first_seconds": ours_refit[ours]["seconds"][0],
            "surprise_seconds_per_pair": surprise_med[theirs],
            "refit_ratio": surprise_med[theirs] / refit_med[ours],
            "foldin_ratio": surprise_med[theirs] * n_pairs / statistics.median(per_method[ours]),
        })
    surprise_pair_total = sum(surprise_med[v] for v in PAIRS.values())
    refit_pair_total = sum(refit_med.values())
    projected = surprise_pair_total * n_pairs
    return {"shape": [m, n], "test_tasks": len(test_idx), "seeds": args.speed_seeds,
            "pairs": n_pairs, "refit_pairs_timed": len(refit_draws),
            "surprise_pairs_timed": len(surprise_draws), "foldin_times": times,
            "foldin_median": statistics.median(times), "foldin_first": times[0],
            "refit_per_pair": refit_pair_total,
            "refit_projected": refit_pair_total * n_pairs,
            "refit_with_compile": sum(sum(v["seconds"]) for v in ours_refit.values())
            / len(refit_draws),
            "surprise_per_pair": surprise_pair_total, "surprise_projected": projected,
            "rows": rows_out,
            "refit_ratio": surprise_pair_total / refit_pair_total,
            "foldin_ratio_median": projected / statistics.median(times),
            "foldin_ratio_first": projected / times[0]}


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


def _cmp(ours: float, theirs: float) -> str:
    return "lower or equal" if ours <= theirs else "higher"


COMMON = (
    "Two references, one subsection each (`--reference=final|first`; `--write` rewrites the "
    "subsection of the reference it ran and keeps the other as it was, with its own command and "
    "date): the paper's final code, AuCson/low-rank-forgetting (run_matrix_completion.py, with the "
    "methods and k of scripts/mat_completion/run_all.sh), and the first version's code, "
    "INK-USC/lm-forgetting-prediction-code (src/run_matrix_completion.py). Under either, "
    "forgetting_jax and scikit-surprise see the same matrices, test tasks and observed columns "
    "and are scored on the same entries.")

SETTINGS = {  # what the tables' captions say of each reference's settings and protocol
    "final": "surprise's BaselineOnly and KNNBaseline with SGD baselines of 1000 epochs, SVD of "
             "1000 epochs with 5 factors, lr 0.005, reg 0, init std 0.001; the observed "
             "columns `default_rng(seed).choice(N, 30)`, the same for every test task; RMSE on "
             "the unobserved columns, pooled over the test tasks of a seed, mean over seeds",
    "first": "surprise's BaselineOnly with ALS of 100 epochs, KNNBaseline and KNNBasic at "
             "their defaults, SVD of 100 epochs with 100 factors; 30 distinct observed columns "
             "per (task, seed), drawn by forgetting_jax's protocol; RMSE on the unobserved "
             "entries, mean over (task, seed) pairs",
}

RUNS_TWO_WAYS = (
    "forgetting_jax runs two ways: **fold-in**, the protocol (`run_protocol`: one fit per method "
    "on the training rows, then every pair folded in), and **refit** "
    "(`forgetting_jax.predict.refit.refit_predict`: one cold-started fit per pair on the "
    "training rows plus the pair's k entries, then that row's prediction, i.e. the same work "
    "per pair as surprise). surprise's seconds count its fit and prediction only (building its "
    "Trainset is left out, which favours it); refit's count building the matrix with the test "
    "row, the fit and the prediction.")

MATRICES = (
    "The matrices are planted with the shape of real forgetting matrices (additive + "
    "multiplicative + weaker low-rank parts + noise 0.6), fully observed; their rank-1..5 R^2 "
    "is listed.")


def describe(res) -> str:
    """How surprise and forgetting_jax run under the result's reference."""
    if res["reference"] == "final":
        return (
            "surprise runs as the paper's final code (run_matrix_completion.py) runs it: tasks "
            "are users, one fit per (test task, seed) on the training rows plus the test row "
            "with its observed entries, predictions from `predict(user, item).est` with "
            "`Reader(rating_scale=(-100., 100.))` (surprise clips `est` to it), and its "
            "settings: `BaselineOnly(bsl_options={'n_epochs': 1000, 'method': 'sgd'})` (SGD, "
            "lr 0.005, reg 0.02), `KNNBaseline(bsl_options={'n_epochs': 1000, 'method': "
            "'sgd'})` (k 40, MSD similarity, user based), `SVD(n_epochs=1000, n_factors=5, "
            "lr_all=0.005, reg_all=0, init_std_dev=0.001)` (biased; seeded per pair here, "
            "unseeded there), and `KNNBasic()` (k 40, MSD, user based; listed too, run_all.sh "
            "does not run it). Its protocol, on both sides: for seed s the k = 30 observed "
            "columns are `numpy.random.default_rng(s).choice(N, 30)` (with replacement), the "
            "same columns for every test task (forgetting_jax: `run_protocol(..., "
            "sampling=\"reference\")`); RMSE on the unobserved columns of the test rows, "
            "pooled over the test tasks of a seed as the final code's `sqrt(mean_squared_error"
            "(gts_masked, preds_masked))`, then the mean over seeds. Counterparts: additive vs "
            "BaselineOnly, knn vs KNNBaseline (KNNBasic listed too), als (rank 5) vs SVD. "
            + RUNS_TWO_WAYS + " Not the same as the final code: a column drawn twice counts "
            "twice in forgetting_jax's fold-in (surprise and the refit are given it once, as "
            "the final code's masked row holds it once); run_all.sh runs seeds 0..9 over every "
            "test row, here fewer seeds (see below: 1000 SGD epochs make each surprise fit "
            "take seconds); knn's similarity is the shrunk baseline-Pearson over the observed "
            "columns, not surprise's MSD. " + MATRICES)
    return (
        "surprise runs as the first version's code (src/run_matrix_completion.py) runs it: "
        "tasks are users, one fit per (test task, seed) on the training rows plus the test row "
        "with its k observed entries, predictions from `predict(user, item).est`, and its "
        "settings: `BaselineOnly(bsl_options={'n_epochs': 100})` (ALS, reg_i 10, reg_u 15), "
        "`KNNBaseline()` and `KNNBasic()` (k 40, MSD similarity, user based), "
        "`SVD(n_epochs=100)` (100 factors, biased, lr 0.005, reg 0.02, init std 0.1; seeded "
        "per pair here, unseeded there). Same matrices, test tasks and observed columns (k = "
        "30, drawn by forgetting_jax's protocol) on both sides; RMSE on the unobserved entries "
        "of the test row, mean over (test task, seed) pairs. Counterparts: additive vs "
        "BaselineOnly, knn vs KNNBaseline (KNNBasic listed too), als (rank 5) vs SVD. "
        + RUNS_TWO_WAYS + " Not the same as that code: the observed columns are drawn without "
        "replacement per (task, seed) by forgetting_jax's protocol (it draws k columns with "
        "replacement, the same ones for every test task of a seed), and RMSE leaves the "
        "observed entries out (it pools all entries of the test rows). knn's similarity is the "
        "shrunk baseline-Pearson over the observed columns, not surprise's default MSD. "
        + MATRICES)


def subsection(res) -> str:
    """The subsection of one reference's run: how it ran, its accuracy and speed tables."""
    ref = res["reference"]
    follows = f"following {REFERENCES[ref]} ({SETTINGS[ref]})"
    lines = [SUBSECTION + REFERENCES[ref], "",
             f"`{res['command']}`, {res['date']}, on a {res['machine']}, scikit-surprise "
             f"{res['surprise_version']} (from PyPI). The CPU is shared with other jobs, so "
             "times vary from run to run.", "", describe(res), ""]
    if "accuracy" in res:
        a = res["accuracy"]
        f, r, s = a["foldin_rmse"], a["refit_rmse"], a["surprise_rmse"]
        fewer = (f" (run_all.sh runs 10 seeds; {a['seeds']} here, for time)"
                 if ref == "final" else "")
        lines += [f"Accuracy, {follows}: {a['shape'][0]} x {a['shape'][1]} (rank-1..5 R^2 "
                  f"{a['r2']}), {a['test_tasks']} test tasks x {a['seeds']} seeds{fewer} = "
                  f"{a['pairs']} pairs, every side on every pair (total seconds: refit "
                  f"{sum(a['refit_seconds'].values()):.0f}s, surprise "
                  f"{sum(a['surprise_seconds'].values()):.0f}s).", "",
                  "| forgetting_jax | RMSE, fold-in | RMSE, refit | surprise | RMSE | fold-in "
                  "vs surprise | refit vs surprise |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for ours, theirs in list(PAIRS.items()) + [(v, k) for k, v in EXTRA.items()]:
            lines.append(f"| {ours} | {f[ours]:.4f} | {r[ours]:.4f} | {theirs} | "
                         f"{s[theirs]:.4f} | {_cmp(f[ours], s[theirs])} | "
                         f"{_cmp(r[ours], s[theirs])} |")
        for extra in ("multiplicative", "train_mean"):
            lines.append(f"| {extra} | {f[extra]:.4f} | - | - | - | | |")
        lines.append("")
    if "speed" in res:
        s = res["speed"]
        p = s["pairs"]
        fewer = (f" (fewer than the first reference's {DEFAULTS['first'][1]}, for time)"
                 if ref == "final" and s["surprise_pairs_timed"] < DEFAULTS["first"][1] else "")
        rmse_over = ("the pairs surprise ran" if ref == "first" else
                     "the pairs surprise ran, pooled per seed, mean over seeds")
        lines += [f"Speed, {follows}: {s['shape'][0]} x {s['shape'][1]}, {s['test_tasks']} "
                  f"test tasks x {s['seeds']} seeds = {p} pairs. Fold-in: the whole protocol "
                  f"for additive, knn and als over all {p} pairs, median of "
                  f"{len(s['foldin_times'])} runs {s['foldin_median']:.2f}s (first run, with "
                  f"compilation, {s['foldin_first']:.2f}s). Refit: {s['refit_pairs_timed']} "
                  "pairs spread over the pairs, each method in turn; seconds per pair are the "
                  "median over the pairs after the first (the first compiles; it is listed). "
                  f"surprise: {s['surprise_pairs_timed']} of those pairs{fewer}, median "
                  f"fit+predict seconds per pair; running all {p} pairs would take "
                  f"{s['surprise_projected']:.0f}s (projected: median per pair x {p}), so they "
                  f"were not run. RMSE columns: {rmse_over}.", "",
                  "| forgetting_jax vs surprise | RMSE fold-in | RMSE refit | RMSE surprise "
                  f"| fold-in s, {p} pairs | refit s / pair (first) | surprise s / pair "
                  "| refit speed-up | fold-in speed-up |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in s["rows"]:
            lines.append(
                f"| {r['method']} vs {r['surprise']} | {r['foldin_rmse']:.4f} | "
                f"{r['refit_rmse']:.4f} | {r['surprise_rmse']:.4f} | {r['foldin_seconds']:.2f} "
                f"| {r['refit_seconds_per_pair']:.3f} ({r['refit_first_seconds']:.2f}) | "
                f"{r['surprise_seconds_per_pair']:.2f} | {r['refit_ratio']:.0f}x | "
                f"{r['foldin_ratio']:.0f}x |")
        main_rows = [r for r in s["rows"] if PAIRS.get(r["method"]) == r["surprise"]]
        refit_min = min(r["refit_ratio"] for r in main_rows)
        refit_ok = refit_min >= 10
        fold_ok = s["foldin_ratio_first"] >= 500 and min(
            r["foldin_ratio"] for r in main_rows) >= 500
        refit_each = ", ".join(f"{r['method']} {r['refit_ratio']:.0f}x" for r in main_rows)
        fold_each = ", ".join(f"{r['method']} {r['foldin_ratio']:.0f}x" for r in main_rows)
        lines += [
            "",
            f"Refit per pair vs surprise's refit per pair (additive + knn + als against "
            f"BaselineOnly + KNNBaseline + SVD): {s['refit_per_pair']:.2f}s vs "
            f"{s['surprise_per_pair']:.1f}s per pair, **{s['refit_ratio']:.0f}x** "
            f"({s['refit_with_compile']:.2f}s per pair counting each method's first, compiling "
            f"pair); per method {refit_each}. "
            f"Goal 10x per method: {'met' if refit_ok else 'missed'}.",
            "",
            f"Fit once + fold-in vs surprise's refit per pair, all {p} pairs: "
            f"{s['foldin_median']:.2f}s vs {s['surprise_projected']:.0f}s projected, "
            f"**{s['foldin_ratio_median']:.0f}x** (median runs), "
            f"{s['foldin_ratio_first']:.0f}x counting the first run's compilation; per method "
            f"{fold_each} (median runs). Goal "
            f"500x: {'met' if fold_ok else 'missed'}.", ""]
    return "\n".join(lines).rstrip()


def report(res, kept: dict[str, str] | None = None) -> str:
    """The whole section: the run reference's subsection, the other's as kept (`kept`:
    reference -> its subsection text from BENCHMARKS.md), then the Scale paragraph."""
    kept = kept or {}
    lines = [SECTION, "", COMMON, ""]
    for ref in REFERENCES:
        if ref == res["reference"]:
            lines += [subsection(res), ""]
        elif kept.get(ref):
            lines += [kept[ref], ""]
    if "scale" in res:
        c = res["scale"]
        per = ", ".join(f"{k} {v['seconds']:.1f}s (fit {v['fit_seconds']:.1f}s)"
                        for k, v in c["methods"].items())
        ok = c["wall_seconds"] <= 120 and c["peak_rss_gib"] <= 12
        lines += [f"Scale (run of {res['date']} with `--scale`; forgetting_jax only): "
                  f"`forgetting-jax predict` on a {c['shape'][0]} x {c['shape'][1]:,} "
                  f"float32 matrix file ({c['shape'][0] * c['shape'][1] * 4 / 1e9:.1f} GB), "
                  f"{c['test_rows']} test rows, k = 30, 1 seed, methods "
                  f"{', '.join(c['methods'])}: wall **{c['wall_seconds']:.0f}s** for the whole "
                  f"command (start-up, loading the file, every fit, completion and metrics), "
                  f"peak RSS **{c['peak_rss_gib']:.1f} GiB**. Per method: {per}. AUC and "
                  f"Spearman there use a fixed subset of {c['settings']['rank_metric_columns']:,}"
                  f" columns. Goal (2 minutes, 12 GB): {'met' if ok else 'missed'}.", ""]
    elif "scale_kept" in res:
        lines += [res["scale_kept"], ""]
    return "\n".join(lines).rstrip() + "\n"


def old_section(path: str) -> str | None:
    """The section's current text in BENCHMARKS.md, or None."""
    if not os.path.exists(path):
        return None
    old = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", open(path).read(), re.S | re.M)
    return old.group(0) if old else None


def kept_reference(path: str, reference: str) -> str | None:
    """One reference's subsection as BENCHMARKS.md has it (a section written before the
    subsections existed is the first version's), or None."""
    old = old_section(path)
    if old is None:
        return None
    head = SUBSECTION + REFERENCES[reference]
    sub = re.search(rf"^{re.escape(head)}\n.*?(?=^### |^Scale|\Z)", old, re.S | re.M)
    if sub:
        return sub.group(0).strip()
    if reference == "first" and SUBSECTION not in old:
        paras = [p.strip() for p in old.split("\n\n")[1:]
                 if p.strip() and not p.startswith("Scale")]
        return "\n\n".join([head] + paras) if paras else None
    return None


def kept_scale(path: str) -> str | None:
    """The Scale paragraph of the section in BENCHMARKS.md, marked as from its earlier run."""
    old = old_section(path)
    if old is None:
        return None
    para = next((p for p in old.split("\n\n") if p.startswith("Scale")), None)
    if para is None:
        return None
    fresh = re.match(r"Scale(?: \(run of (\d{4}-\d{2}-\d{2}) with `--scale`; forgetting_jax only\))?:",
                     para)
    if fresh:
        date = fresh.group(1) or next(iter(re.findall(r"\d{4}-\d{2}-\d{2}", old)), None)
        when = f"the run of {date}" if date else "an earlier run"
        para = (f"Scale (from {when} with `--scale`, not rerun here; it runs forgetting_jax "
                "only):" + para[fresh.end():])
    return para.strip()


def write_section(path: str, text: str) -> None:
    from forgetting_jax.utils.io import write_text

    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else (
        old.rstrip() + "\n\n" + text)
    write_text(path, new.rstrip() + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", choices=tuple(REFERENCES), default="final",
                   help="which version of the paper's code surprise runs as, with its settings "
                        "and protocol: final (AuCson/low-rank-forgetting) or first "
                        "(INK-USC/lm-forgetting-prediction-code)")
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--test_tasks", type=int, default=20)
    p.add_argument("--accuracy_shape", type=int, nargs=2, default=[66, 2000])
    p.add_argument("--accuracy_seeds", type=int, default=None,
                   help=f"default {DEFAULTS['final'][0]} (final; fewer for time) or "
                        f"{DEFAULTS['first'][0]} (first)")
    p.add_argument("--speed_shape", type=int, nargs=2, default=[200, 20000])
    p.add_argument("--speed_seeds", type=int, default=10)
    p.add_argument("--runs", type=int, default=3, help="fold-in protocol runs (median)")
    p.add_argument("--refit_pairs", type=int, default=20, help="pairs timed for the refit")
    p.add_argument("--surprise_pairs", type=int, default=None,
                   help="of the refit pairs, those timed for surprise: default "
                        f"{DEFAULTS['final'][1]} (final; fewer for time) or "
                        f"{DEFAULTS['first'][1]} (first)")
    p.add_argument("--scale", action="store_true", help="run the 1,000 x 1,000,000 check")
    p.add_argument("--scale_shape", type=int, nargs=2, default=[1000, 1_000_000])
    p.add_argument("--scale_test_rows", type=int, default=100)
    p.add_argument("--scale_methods", default="additive,multiplicative,als,knn")
    p.add_argument("--scale_dir", default=None, help="where to write the temporary matrix")
    p.add_argument("--skip", default="", help="comma list of parts to skip: accuracy,speed")
    p.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--report_from", default=None,
                   help="write the report of raw results saved with --json instead of running")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.scale_methods = args.scale_methods.split(",")
    seeds, pairs = DEFAULTS[args.reference]
    args.accuracy_seeds = seeds if args.accuracy_seeds is None else args.accuracy_seeds
    args.surprise_pairs = pairs if args.surprise_pairs is None else args.surprise_pairs
    shown, skip_next = [], False
    for a in sys.argv[1:]:  # the command as run, less where the raw results went
        if skip_next or a.startswith("--json"):
            skip_next = a == "--json"
            continue
        shown.append(a)
    command = " ".join(["python benchmarks/completion_vs_surprise.py"] + shown)

    def log(s):
        print(s, flush=True)

    skip = set(args.skip.split(",")) - {""}
    bench = os.path.join(ROOT, "BENCHMARKS.md")
    if args.report_from:
        res = json.load(open(args.report_from))
        res.setdefault("reference", "first")  # raw results from before --reference
        skip = {"accuracy", "speed"}
    else:
        import surprise

        res = {"command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
               "surprise_version": surprise.__version__, "reference": args.reference}
    if "accuracy" not in skip:
        res["accuracy"] = accuracy(args, log)
    if "speed" not in skip:
        res["speed"] = speed(args, log)
    if args.scale:
        res["scale"] = scale(args, log)
    elif "scale" not in res and kept_scale(bench):
        res["scale_kept"] = kept_scale(bench)
    kept = {ref: kept_reference(bench, ref) for ref in REFERENCES if ref != res["reference"]}
    text = report(res, kept)
    print("\n" + text)
    if args.json:
        json.dump(res, open(args.json, "w"), indent=1, default=float)
    if args.write:
        write_section(bench, text)


if __name__ == "__main__":
    main()
