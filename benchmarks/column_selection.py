"""Which upstream examples to score: the protocol under uniform and informative column selection.

  python benchmarks/column_selection.py --matrix=demo=W/experiments/demo/forgetting.npz \
      --matrix=smollm2=W2/experiments/smollm2_instruct/forgetting.npz --split_seeds=0,1,2 --output=DIR

For every matrix, k and sampling (uniform, variance, leverage, spread: predict/protocol.py,
predict/selection.py) it runs the comparison that `forgetting-jax predict --test_fraction=0.3
--seeds=10 --sampling=S --k=K --methods=...` runs, and writes its results JSON to
DIR/NAME_SAMPLING_kK.json. The protocol scores the unobserved entries of each pair, and
informative selection takes the most variable entries out of that set, so its figures are not on
the same entries under every sampling. Beside them, the same predictions (the protocol's pairs
and observed columns, recomputed; the protocol's pooled RMSE is checked against them) scored on a
common set: each test row's finite entries less the union of its variance and leverage top-k
columns and less the pair's own k observed columns (DIR/NAME_SAMPLING_kK_common.json). Prints (and
writes DIR/table.md) the protocol's pooled RMSE and Spearman row mean and the common set's pooled
RMSE (its Spearman is in the JSON); with several --split_seeds (other draws of the test tasks,
into DIR/split_seed_S/), DIR/best.md: the best completion method's common-set RMSE under each
sampling, per split.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from forgetting_jax.analysis.chunks import ColumnChunks  # noqa: E402
from forgetting_jax.analysis.matrix_file import read_matrix_file  # noqa: E402
from forgetting_jax.analysis.stats import json_safe  # noqa: E402
from forgetting_jax.predict import comparison, protocol, registry, selection  # noqa: E402
from forgetting_jax.predict.methods import Batch  # noqa: E402
from forgetting_jax.predict.metrics import batch_metrics  # noqa: E402
from forgetting_jax.utils.io import write_json  # noqa: E402


def pair_columns(z_MxN, test_idx, rows_M, k, seeds, sampling, base_seed):
    """(pos [P], seed [P], observed columns [P, k]) of the protocol's pairs, drawn as run_protocol
    draws them (task-major pairs)."""
    pos_P = np.repeat(np.arange(len(test_idx)), seeds)
    seed_P = np.tile(np.arange(seeds), len(test_idx))
    truth_TxN = z_MxN[test_idx]
    if sampling == "uniform":
        keys_P = protocol.pair_keys(base_seed, seed_P, test_idx[pos_P])
        idx, _ = protocol._draw_batch(keys_P, jnp.asarray(truth_TxN), jnp.asarray(pos_P), k=k)
        return pos_P, seed_P, np.asarray(idx)
    return pos_P, seed_P, protocol.informative_pair_columns(ColumnChunks(z_MxN, rows_M), truth_TxN, pos_P, seed_P,
                                                            k, sampling, base_seed)


def common_set(data, test_idx, settings):
    """Every method's predictions of the protocol's pairs, scored on a set of entries that barely
    depends on the sampling: a test row's finite entries less its variance and leverage top-k
    columns (the union U, chosen from the training rows) and less the pair's own k observed
    columns (inside U under variance and leverage; k more entries under uniform and spread).
    Also the protocol's own pooled RMSE, recomputed from the same predictions (a check)."""
    z = np.asarray(data["Z"], np.float32)
    m, n = z.shape
    k, base_seed = settings.k, settings.split_seed
    rows = np.ones(m, bool)
    rows[test_idx] = False
    chunks = ColumnChunks(z, rows)
    truth = z[test_idx]
    valid = np.isfinite(truth)
    scores = {kind: selection.column_scores(chunks, kind) for kind in ("variance", "leverage")}
    union = [np.union1d(*[selection.choose(scores[kind], k, kind, base_seed, valid[t]) for kind in scores])
             for t in range(len(test_idx))]
    pos_P, seed_P, idx_PxK = pair_columns(z, test_idx, rows, k, settings.seeds, settings.sampling, base_seed)
    excl_PxE = np.stack([np.concatenate([idx_PxK[i], np.resize(union[p], 2 * k)]) for i, p in enumerate(pos_P)])
    val_PxK = np.take_along_axis(truth[pos_P], idx_PxK, axis=1)
    batch = Batch(test_idx[pos_P], protocol.pair_keys(base_seed, seed_P, test_idx[pos_P]),
                  jnp.asarray(idx_PxK, jnp.int32), jnp.asarray(np.where(np.isfinite(val_PxK), val_PxK, 0.0)))
    methods = registry.build_methods(settings.methods, settings.completion, data)
    args = (jnp.asarray(truth), jnp.asarray(pos_P), None, jnp.arange(n, dtype=jnp.int32),
            jnp.float32(comparison.threshold_for(data, settings)))
    out = {}
    for name, method in methods.items():
        pred = method.complete(method.fit(chunks), batch, chunks)
        both = {}
        for part, excl in (("protocol", idx_PxK), ("common", excl_PxE)):
            a = list(args)
            a[2] = jnp.asarray(excl, jnp.int32)
            met = jax.device_get(batch_metrics(pred, *a, top_k=10))
            rho = np.asarray(met["spearman"])
            both[part] = {"pooled_rmse": float(np.sqrt(met["sq_err"].sum() / met["n"].sum())),
                          "spearman_row_mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else None,
                          "scored_entries": int(met["n"].sum())}
        out[name] = both
    return {"methods": out, "union_sizes": [int(len(u)) for u in union], "k": k, "sampling": settings.sampling,
            "seeds": settings.seeds, "test_tasks": [str(data["tasks"][i]) for i in test_idx]}


def run_all(matrices, ks, samplings, methods, seeds, test_fraction, split_seed, out_dir):
    results = {}
    for name, path in matrices:
        data = read_matrix_file(path)
        test_idx = protocol.select_test_tasks(data["tasks"], None, test_fraction, split_seed)
        for k in ks:
            for sampling in samplings:
                settings = comparison.ComparisonSettings(methods=tuple(methods), k=k, seeds=seeds,
                                                         split_seed=split_seed, sampling=sampling)
                t0 = time.perf_counter()
                res = comparison.compare(data, test_idx, settings, log_fn=lambda _: None)
                res["settings"]["matrix"] = path
                common = common_set(data, test_idx, settings)
                for method, entry in common["methods"].items():  # the same predictions as the protocol's
                    got, want = entry["protocol"]["pooled_rmse"], res["methods"][method]["pooled"]["rmse"]
                    if abs(got - want) > 1e-4 * max(want, 1e-6):
                        raise RuntimeError(f"{name} k={k} {sampling} {method}: recomputed RMSE {got} != {want}")
                print(f"{name} k={k} {sampling}: {time.perf_counter() - t0:.1f}s", flush=True)
                stem = os.path.join(out_dir, f"{name}_{sampling}_k{k}")
                write_json(stem + ".json", json_safe(res))
                write_json(stem + "_common.json", json_safe(common))
                results[(name, k, sampling)] = (res["methods"], common["methods"])
    return results


def markdown(results, matrices, ks, samplings, methods):
    """Per matrix: the protocol's pooled RMSE / Spearman row mean (its unobserved entries) and the
    common set's pooled RMSE (`common_set`), under each sampling; the lowest RMSE of each in bold."""
    lines = []
    for name, _ in matrices:
        lines += [f"{name}: the protocol's pooled RMSE / Spearman row mean, then the common set's pooled RMSE", "",
                  "| k | method | " + " | ".join(samplings + [f"common {s}" for s in samplings]) + " |",
                  "| ---: | --- |" + " ---: |" * (2 * len(samplings))]
        for k in ks:
            for method in methods:
                proto = [results[(name, k, s)][0][method] for s in samplings]
                common = [round(results[(name, k, s)][1][method]["common"]["pooled_rmse"], 4) for s in samplings]
                rmse = [round(p["pooled"]["rmse"], 4) for p in proto]
                cells = [f"{r:.4f} / " + ("-" if p["spearman"] is None else f"{p['spearman']:.3f}")
                         for r, p in zip(rmse, proto)]
                cells = [f"**{c}**" if r == min(rmse) else c for c, r in zip(cells, rmse)]
                cells += [f"**{c:.4f}**" if c == min(common) else f"{c:.4f}" for c in common]
                lines.append(f"| {k} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def best_table(by_split, matrices, ks, samplings, methods):
    """Per matrix, k and split: the common-set pooled RMSE of the best completion method under each
    sampling (reference forecasters left out), and its change against uniform's best."""
    methods = [m for m in methods if m not in comparison.REFERENCE_POINTS]
    lines = ["Best completion method per sampling, common-set pooled RMSE (change against uniform's best)", "",
             "| matrix | k | split seed | " + " | ".join(samplings) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(samplings)]
    for name, _ in matrices:
        for k in ks:
            for split, results in by_split.items():
                best = [min((results[(name, k, s)][1][m]["common"]["pooled_rmse"], m) for m in methods)
                        for s in samplings]
                base = best[0][0]
                change = [round(100.0 * (r / base - 1.0)) for r, _ in best]
                cells = [f"{r:.4f} {m}" + ("" if i == 0 else f" ({c:+d}%)" if c else " (0%)")
                         for i, ((r, m), c) in enumerate(zip(best, change))]
                lines.append(f"| {name} | {k} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", action="append", required=True, help="NAME=PATH of a matrix file (repeatable)")
    parser.add_argument("--k", default="10,30,100")
    parser.add_argument("--samplings", default="uniform,variance,leverage,spread")
    parser.add_argument("--methods", default="additive,multiplicative,als,knn,train_mean")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--test_fraction", type=float, default=0.3)
    parser.add_argument("--split_seeds", default="0",
                        help="seeds of the test-task draws: the first writes into --output, each other into "
                             "--output/split_seed_S; best.md compares them")
    parser.add_argument("--output", required=True, help="directory of the JSON results and table.md")
    args = parser.parse_args()
    matrices = [tuple(m.split("=", 1)) for m in args.matrix]
    ks = [int(k) for k in args.k.split(",")]
    samplings, methods = args.samplings.split(","), args.methods.split(",")
    splits = [int(s) for s in args.split_seeds.split(",")]
    by_split = {}
    for i, split in enumerate(splits):
        out = args.output if i == 0 else os.path.join(args.output, f"split_seed_{split}")
        os.makedirs(out, exist_ok=True)
        by_split[split] = run_all(matrices, ks, samplings, methods, args.seeds, args.test_fraction, split, out)
        table = markdown(by_split[split], matrices, ks, samplings, methods)
        with open(os.path.join(out, "table.md"), "w") as f:
            f.write(table + "\n")
        print(table)
    best = best_table(by_split, matrices, ks, samplings, methods)
    with open(os.path.join(args.output, "best.md"), "w") as f:
        f.write(best + "\n")
    with open(os.path.join(args.output, "run.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                   "date": time.strftime("%Y-%m-%d")}, f, indent=1)
    print(best)


if __name__ == "__main__":
    main()
