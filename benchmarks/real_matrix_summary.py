"""How low-rank a forgetting matrix is, beside the paper's figures and a row-shuffled null.

  python benchmarks/real_matrix_summary.py --matrix=W/experiments/smollm2_instruct/forgetting.npz

For the matrix Z [M, N] and for `--shuffles` copies whose every row is permuted independently (the
row-shuffled null: each task keeps its own values, so its mean and spread, but the association
between tasks and particular upstream examples is destroyed), it reports the R^2 of the rank-1..5
truncated SVD and of the additive (mu + b_task + b_example) and multiplicative (rank-1 with
biases) fits, with the same fitting code as `forgetting-jax analyze`, beside the paper's OLMo-7B
rank-k figures (Jin & Ren, the final version). Also the matrix's size and the share of entries
above zero (examples forgotten, their NLL up after fine-tuning).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from forgetting_jax.analysis import fits  # noqa: E402
from forgetting_jax.analysis.chunks import ColumnChunks  # noqa: E402
from forgetting_jax.analysis.matrix_file import read_matrix_file  # noqa: E402

PAPER_OLMO_7B_RANK_R2 = (0.512, 0.633, 0.715, 0.762, 0.790)
MAX_RANK = len(PAPER_OLMO_7B_RANK_R2)


def r2_figures(z_MxN: np.ndarray) -> dict:
    """{"rank": [R^2 of ranks 1..5], "additive": R^2, "multiplicative": R^2} of Z."""
    chunks = ColumnChunks(z_MxN)
    svd = fits.truncated_svd(chunks, MAX_RANK)
    return {"rank": [float(r) for r in np.asarray(svd.r2_K)[:MAX_RANK]],
            "additive": float(fits.fit_r2(fits.fit_additive(chunks, reg=1e-3), chunks)),
            "multiplicative": float(fits.fit_r2(fits.fit_multiplicative(chunks, reg=1e-3), chunks))}


def row_shuffled(z_MxN: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Z with each row's entries permuted independently."""
    return np.stack([row[rng.permutation(row.size)] for row in z_MxN])


def summary(path: str, shuffles: int, seed: int) -> dict:
    z = np.asarray(read_matrix_file(path)["Z"], np.float32)
    rng = np.random.default_rng(seed)
    nulls = [r2_figures(row_shuffled(z, rng)) for _ in range(shuffles)]
    finite = z[np.isfinite(z)]
    return {"matrix": path, "shape": list(z.shape), "mean": float(finite.mean()), "std": float(finite.std()),
            "fraction_positive": float((finite > 0).mean()), "observed": r2_figures(z),
            "null_mean": {key: np.mean([n[key] for n in nulls], axis=0).tolist() for key in nulls[0]},
            "null_std": {key: np.std([n[key] for n in nulls], axis=0).tolist() for key in nulls[0]},
            "shuffles": shuffles, "paper_olmo_7b_rank": list(PAPER_OLMO_7B_RANK_R2)}


def markdown(result: dict) -> str:
    obs, null, sd = result["observed"], result["null_mean"], result["null_std"]
    lines = ["| fit | this matrix | row-shuffled null (mean ± sd) | paper, OLMo-7B |", "| --- | ---: | ---: | ---: |"]
    for k in range(MAX_RANK):
        lines.append(f"| rank-{k + 1} SVD | {obs['rank'][k]:.3f} | {null['rank'][k]:.3f} ± {sd['rank'][k]:.3f} "
                     f"| {result['paper_olmo_7b_rank'][k]:.3f} |")
    for key in ("additive", "multiplicative"):
        lines.append(f"| {key} | {obs[key]:.3f} | {null[key]:.3f} ± {sd[key]:.3f} | |")
    head = (f"Z: {result['shape'][0]} x {result['shape'][1]}, mean {result['mean']:.4f}, sd {result['std']:.4f}, "
            f"{result['fraction_positive']:.1%} of entries above zero; null: {result['shuffles']} shuffles")
    return head + "\n\n" + "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", required=True, help="forgetting.npz of the experiment")
    parser.add_argument("--shuffles", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()
    result = summary(args.matrix, args.shuffles, args.seed)
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
