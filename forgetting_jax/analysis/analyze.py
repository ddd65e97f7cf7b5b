"""The analysis of one forgetting matrix: fits, statistics, figures, fits.json, similarity.json.

`analyze_matrix` is what `forgetting-jax analyze` and the pipeline's report run.
"""

import logging
import os
import time

import numpy as np

from forgetting_jax.analysis import figures, fits, similarity, stats
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file, similarity_fields
from forgetting_jax.analysis.nonfinite import count_nonfinite
from forgetting_jax.analysis.stats import json_safe
from forgetting_jax.utils.io import atomic_path, write_json

log = logging.getLogger("forgetting_jax.analyze")


def analyze_matrix(matrix: str, output: str, max_rank: int = 10, reg: float = 1e-3, top_n: int = 10,
                   top_fraction: float = 0.05, chunk_columns: int | None = None,
                   extra_arrays: dict | None = None) -> dict:
    """Fits, statistics and figures of the matrix file `matrix`, written to `output`: fits.json,
    similarity.json (analysis/similarity.py) and the figures.

    Returns the fits.json content. Raises MatrixFileError for a file that breaks the contract.
    extra_arrays: similarity inputs from elsewhere (the text embeddings of `analyze --embedder`),
    checked as the file's own and used in their place. Non-finite entries of Z (NaN: missing,
    +inf/-inf: a diverged run) are left out of every fit and statistic; they are counted, logged
    as a warning and recorded under "nonfinite".
    """
    if max_rank < 1:
        raise MatrixFileError("max_rank must be at least 1")
    data = read_matrix_file(matrix)
    z, tasks, ids = data["Z"], data["tasks"], data["example_ids"]
    if extra_arrays:
        data.update(similarity_fields(f"{matrix} (with the computed text embeddings)", extra_arrays, *z.shape))
    nonfinite = count_nonfinite(z, tasks)
    if nonfinite.any:
        log.warning("%s: %s", matrix, nonfinite.describe("Z"))
    chunks = ColumnChunks(z, chunk_columns=chunk_columns)
    t0 = time.perf_counter()
    try:
        mom = fits.moments(chunks)
    except ValueError:
        raise MatrixFileError(f"{matrix}: field 'Z' has no observed (finite) entry") from None
    additive = fits.fit_additive(chunks, reg=reg)
    r2_add = fits.fit_r2(additive, chunks)
    multiplicative = fits.fit_multiplicative(chunks, reg=reg)
    r2_mul = fits.fit_r2(multiplicative, chunks)
    log.info("additive R^2 %.4f, multiplicative R^2 %.4f (%.2fs)", r2_add, r2_mul,
                 time.perf_counter() - t0)
    t0 = time.perf_counter()
    svd = fits.truncated_svd(chunks, max_rank)
    log.info("rank-1..%d R^2 %s (%s, %.2fs)", len(svd.r2_K), np.round(svd.r2_K, 4),
                 "exact" if svd.exact else "ALS over observed entries", time.perf_counter() - t0)
    u, s, v = (np.asarray(a) for a in (svd.u_MxK, svd.s_K, svd.v_NxK))
    baselines = similarity.mean_baselines(z)
    log.info("item-only R^2 %s, task-only R^2 %s", *(_text(baselines[k]) for k in ("item_only", "task_only")))

    result = {
        "matrix": matrix,
        "shape": list(z.shape),
        "observed_fraction": mom.count / float(z.size),
        "nonfinite": nonfinite.as_dict(),
        "mean": mom.mean,
        "variance": mom.var,
        "r2": {"item_only": baselines["item_only"], "task_only": baselines["task_only"],
               "additive": r2_add, "multiplicative": r2_mul,
               "svd": {str(i + 1): float(r) for i, r in enumerate(svd.r2_K)},
               "svd_exact": svd.exact},
        "components": stats.component_summary(u, s, v, tasks, ids, top_n),
        "settings": {"max_rank": max_rank, "reg": reg, "top_n": top_n,
                     "top_fraction": top_fraction},
    }
    mean_forgetting = np.asarray(fits.moments(chunks).col_mean_N)
    top = stats.top_indices(mean_forgetting, top_n)
    result["most_forgotten_examples"] = [
        {"example": ids[j], "index": int(j), "mean_forgetting": float(mean_forgetting[j])}
        for j in top]
    if "example_sources" in data:
        sources = data["example_sources"]
        result["enrichment"] = {
            "mean_forgetting": stats.source_enrichment(mean_forgetting, sources,
                                                       top_fraction),
            "components": [stats.source_enrichment(v[:, c], sources, top_fraction)
                           for c in range(min(3, v.shape[1]))],
        }
        log.info("source enrichment: chi2 %s, p %s",
                     result["enrichment"]["mean_forgetting"]["chi2"],
                     result["enrichment"]["mean_forgetting"]["p_value"])
    t0 = time.perf_counter()
    sim = similarity.similarity_analysis(data, result["r2"])
    sim.content = dict(matrix=matrix, **sim.content)
    result["similarity"] = sim.summary()
    for name, m in result["similarity"].items():
        log.info("Z against %s: Pearson %s, Spearman %s over %d entries", name, _text(m["pearson"]),
                 _text(m["spearman"]), m["count"])
    log.info("similarity measures: %s (%.2fs)", ", ".join(result["similarity"]) or "none in the file",
             time.perf_counter() - t0)

    os.makedirs(output, exist_ok=True)
    figs = {
        "heatmap.png": figures.heatmap(z, tasks),
        "r2_by_rank.png": figures.r2_by_rank(svd.r2_K, r2_add, r2_mul, baselines["item_only"],
                                             baselines["task_only"]),
        "components.png": figures.components(u, s, v, tasks),
        "similarity.png": figures.similarity(json_safe(sim.content), sim.samples),
    }
    for name, fig in figs.items():
        with atomic_path(os.path.join(output, name)) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        figures.plt.close(fig)
    write_json(os.path.join(output, "similarity.json"), json_safe(sim.content))
    write_json(os.path.join(output, "fits.json"), json_safe(result))
    log.info("wrote %s, similarity.json and %s", os.path.join(output, "fits.json"),
                 ", ".join(figs))
    return json_safe(result)


def _text(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"
