"""Forgetting against similarity: how well a similarity between a task and an upstream example
tracks Z, and the item-only and task-only baselines of the low-rank fits (the paper's association
analyses: correlation_analysis.ipynb and post_process/fit_utils.py of its final code).

The measures, each [M, N], formed from the matrix file's arrays that are present
(`available_measures`):

  representation_cosine   cosine of task_embeddings [M, D] and example_embeddings [N, D] (the
                          base model's mean-pooled final hidden states, matrix/representations.py)
  gradient_product        task_gradients [M, P] . example_gradients [N, P] (the final code's
                          gradient score; matrix/gradients.py, matrix.gradient_dim > 0)
  gradient_cosine         cosine of the same gradients
  text_embedding_cosine   cosine of task_text_embeddings [M, E] and example_text_embeddings [N, E]
                          (a sentence-embedding model's, matrix/text_embeddings.py: the paper's
                          OpenAI / SentenceBERT correlations)

A cosine with a zero vector is undefined (NaN) and left out. For each measure: the Pearson and
Spearman correlations of Z against it over every entry where both are finite, pooled (as the
notebook: the flattened matrices), and per task (over its row), with the entry counts. Ranks are
scipy's average ranks (ties share their mean rank, as spearmanr). The pooled Spearman ranks at
most MAX_POOLED_RANKS entries: beyond, it is taken over a seeded subset of the columns (the
notebook samples 10,000 upstream examples), named in "spearman_columns"; Pearson is always exact.

R^2 baselines over the finite entries (R^2 = 1 - MSE / Var, the fits' definition):
item_only predicts every entry by its column's mean (fit_utils get_ionly_recons: what the
upstream example alone says), task_only by its row's mean (get_uonly_recons).
"""

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats as sps

MAX_POOLED_RANKS = 1 << 24  # entries ranked at once for the pooled Spearman (~0.5 GB of work arrays)
SCATTER_POINTS = 4000  # entries kept per measure for the figure
BLOCK_COLUMNS = 1 << 14

# The paper's correlations of Z (log-perplexity increase on Dolma, 85 tasks x 10,000 sampled
# upstream examples) with the cosine of sentence embeddings (correlation_analysis.ipynb).
PAPER = {
    "source": "Jin & Ren (arXiv 2406.14026), final code's correlation_analysis.ipynb: Z (log-perplexity "
              "increase on Dolma; 85 FLAN/Tulu/Dolly tasks x 10,000 sampled upstream examples) against the "
              "cosine of each task's and example's sentence embeddings, flattened",
    "olmo-7b": {"openai": {"pearson": 0.158, "spearman": 0.233},
                "sentencebert": {"pearson": 0.043, "spearman": 0.092}},
    "olmo-1b": {"openai": {"pearson": 0.065, "spearman": 0.082},
                "sentencebert": {"pearson": 0.054, "spearman": 0.074}},
}

PAPER_NAMES = {"olmo-7b": "OLMo-7B", "olmo-1b": "OLMo-1B", "openai": "OpenAI", "sentencebert": "SentenceBERT"}


def paper_rows() -> list[tuple[str, str, float, float]]:
    """The paper's figures as (model, embeddings, Pearson, Spearman) rows, readable names."""
    return [(PAPER_NAMES[model], PAPER_NAMES[name], v["pearson"], v["spearman"])
            for model, by_model in PAPER.items() if model != "source" for name, v in by_model.items()]


DESCRIPTIONS = {
    "representation_cosine": "cosine of the base model's mean-pooled states (task_embeddings, example_embeddings)",
    "gradient_product": "task_gradients . example_gradients (the paper's final code's gradient score)",
    "gradient_cosine": "cosine of task_gradients and example_gradients",
    "text_embedding_cosine": "cosine of the embedder's mean-pooled states of the texts (task_text_embeddings, "
                             "example_text_embeddings)",
}


def cosine(task_MxD: np.ndarray, example_NxD: np.ndarray) -> np.ndarray:
    """Cosine [M, N] (stats.cosine_similarity), NaN where either vector is zero (undefined)."""
    from forgetting_jax.analysis.stats import cosine_similarity

    sim = np.array(cosine_similarity(np.asarray(task_MxD, np.float32), np.asarray(example_NxD, np.float32)),
                   np.float32)
    sim[np.linalg.norm(task_MxD, axis=1) == 0, :] = np.nan
    sim[:, np.linalg.norm(example_NxD, axis=1) == 0] = np.nan
    return sim


def gradient_product(task_MxP: np.ndarray, example_NxP: np.ndarray) -> np.ndarray:
    """task . example, [M, N]: the final code's score of a task's and an example's gradients (its
    unscaled projections' inner product / P; these are scaled by 1/sqrt(P): matrix/gradients.py)."""
    import jax.numpy as jnp

    t, e = jnp.asarray(task_MxP, jnp.float32), jnp.asarray(example_NxP, jnp.float32)
    return np.asarray(t @ e.T, np.float32)


def available_measures(data: dict) -> dict[str, Callable[[], np.ndarray]]:
    """{name: a function forming that measure [M, N]} for the arrays `data` (read_matrix_file's)
    holds, in the order of the module docstring."""
    out: dict[str, Callable[[], np.ndarray]] = {}
    if "task_embeddings" in data and "example_embeddings" in data:
        out["representation_cosine"] = lambda: cosine(data["task_embeddings"], data["example_embeddings"])
    if "task_gradients" in data and "example_gradients" in data:
        out["gradient_product"] = lambda: gradient_product(data["task_gradients"], data["example_gradients"])
        out["gradient_cosine"] = lambda: cosine(data["task_gradients"], data["example_gradients"])
    if "task_text_embeddings" in data and "example_text_embeddings" in data:
        out["text_embedding_cosine"] = lambda: cosine(data["task_text_embeddings"], data["example_text_embeddings"])
    return out


def pearson(a_N: np.ndarray, b_N: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays (float64, centred); NaN when either is constant or
    fewer than 2 entries."""
    if a_N.shape[0] < 2:
        return float("nan")
    a = np.asarray(a_N, np.float64) - np.mean(a_N, dtype=np.float64)
    b = np.asarray(b_N, np.float64) - np.mean(b_N, dtype=np.float64)
    den = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / den) if den > 0 else float("nan")


def spearman(a_N: np.ndarray, b_N: np.ndarray) -> float:
    """Spearman correlation: Pearson of average ranks (scipy.stats.spearmanr's definition)."""
    if a_N.shape[0] < 2:
        return float("nan")
    return pearson(sps.rankdata(a_N), sps.rankdata(b_N))


def _pooled_pearson(z_MxN: np.ndarray, sim_MxN: np.ndarray, mask_MxN: np.ndarray) -> float:
    """Pearson over the masked entries, two passes over row blocks (no flattened copies)."""
    m = z_MxN.shape[0]
    step = max(1, (1 << 22) // max(z_MxN.shape[1], 1))
    count, sum_z, sum_s = 0, 0.0, 0.0
    for s in range(0, m, step):
        ok = mask_MxN[s:s + step]
        count += int(ok.sum())
        sum_z += float(np.sum(z_MxN[s:s + step], where=ok, dtype=np.float64))
        sum_s += float(np.sum(sim_MxN[s:s + step], where=ok, dtype=np.float64))
    if count < 2:
        return float("nan")
    mz, ms = sum_z / count, sum_s / count
    zz = ss = zs = 0.0
    for s in range(0, m, step):
        ok = mask_MxN[s:s + step]
        dz = np.where(ok, z_MxN[s:s + step].astype(np.float64) - mz, 0.0)
        ds = np.where(ok, sim_MxN[s:s + step].astype(np.float64) - ms, 0.0)
        zz += float((dz * dz).sum())
        ss += float((ds * ds).sum())
        zs += float((dz * ds).sum())
    den = np.sqrt(zz * ss)
    return float(zs / den) if den > 0 else float("nan")


def correlations(z_MxN: np.ndarray, sim_MxN: np.ndarray, tasks: Sequence[str],
                 max_pooled: int = MAX_POOLED_RANKS, seed: int = 0) -> dict[str, Any]:
    """Pearson and Spearman of Z against one similarity [M, N], over the entries where both are
    finite: pooled and per task ({task: {"pearson", "spearman", "count"}}), JSON-safe (None for
    an undefined correlation)."""
    z = np.asarray(z_MxN, np.float32)
    sim = np.asarray(sim_MxN, np.float32)
    if sim.shape != z.shape:
        raise ValueError(f"similarity has shape {sim.shape}, Z {z.shape}")
    mask = np.isfinite(z) & np.isfinite(sim)
    per_task = {}
    for i, task in enumerate(tasks):
        ok = mask[i]
        a, b = z[i, ok], sim[i, ok]
        per_task[str(task)] = {"pearson": _safe(pearson(a, b)), "spearman": _safe(spearman(a, b)),
                               "count": int(ok.sum())}
    count = int(mask.sum())
    columns = None
    if count <= max_pooled:
        rho = spearman(z[mask], sim[mask])
    else:  # a seeded subset of the columns, as the notebook's 10,000 sampled examples
        k = max(2, int(z.shape[1] * max_pooled / count))
        keep = np.sort(np.random.default_rng(seed).choice(z.shape[1], k, replace=False))
        sub = mask[:, keep]
        rho, columns = spearman(z[:, keep][sub], sim[:, keep][sub]), int(k)
    means = {key: _safe(_nanmean([v[key] for v in per_task.values()])) for key in ("pearson", "spearman")}
    return {"pearson": _safe(_pooled_pearson(z, sim, mask)), "spearman": _safe(rho), "count": count,
            "spearman_columns": columns, "per_task_mean": means, "per_task": per_task}


def mean_baselines(z_MxN: np.ndarray, block: int = BLOCK_COLUMNS) -> dict[str, float | None]:
    """{"item_only", "task_only"}: R^2 of every finite entry predicted by its column's mean
    (item only) or by its row's mean (task only), over the finite entries (None when Z is
    constant or has no finite entry)."""
    from forgetting_jax.analysis.stats import finite_means

    means = finite_means(z_MxN, block)
    count = float(means.row_count_M.sum())
    if count == 0:
        return {"item_only": None, "task_only": None}
    row_mean = np.where(means.row_count_M > 0, means.row_mean_M, 0.0)
    mu = float((row_mean * means.row_count_M).sum() / count)
    sst = sse_item = sse_task = 0.0
    for s in range(0, z_MxN.shape[1], block):
        b = np.asarray(z_MxN[:, s:s + block], np.float64)
        ok = np.isfinite(b)
        col = np.where(np.isfinite(means.col_mean_N[s:s + block]), means.col_mean_N[s:s + block], 0.0)
        sst += float(np.square(np.where(ok, b - mu, 0.0)).sum())
        sse_item += float(np.square(np.where(ok, b - col[None, :], 0.0)).sum())
        sse_task += float(np.square(np.where(ok, b - row_mean[:, None], 0.0)).sum())
    if not sst > 0:
        return {"item_only": None, "task_only": None}
    return {"item_only": 1.0 - sse_item / sst, "task_only": 1.0 - sse_task / sst}


@dataclasses.dataclass
class SimilarityResult:
    """similarity.json's content and, per measure, a sample of (similarity, Z) for the figure."""

    content: dict[str, Any]
    samples: dict[str, tuple[np.ndarray, np.ndarray]]

    def summary(self) -> dict[str, dict]:
        """{measure: {"pearson", "spearman", "count"}}: the pooled figures (fits.json, the report)."""
        return {name: {k: m[k] for k in ("pearson", "spearman", "count")}
                for name, m in self.content["measures"].items()}


def similarity_analysis(data: dict, r2: dict[str, Any], max_pooled: int = MAX_POOLED_RANKS,
                        scatter_points: int = SCATTER_POINTS) -> SimilarityResult:
    """Every measure `data` (read_matrix_file's arrays) allows against its Z, with `r2` (the
    R^2 of the fits: item_only, task_only, additive, multiplicative, svd) and the paper's
    figures; one measure [M, N] in memory at a time."""
    z, tasks = data["Z"], data["tasks"]
    measures, samples = {}, {}
    rng = np.random.default_rng(0)
    for name, form in available_measures(data).items():
        sim = form()
        measures[name] = {"description": DESCRIPTIONS[name], **correlations(z, sim, tasks, max_pooled)}
        ok = np.flatnonzero(np.isfinite(z) & np.isfinite(sim))
        pick = ok if ok.size <= scatter_points else np.sort(rng.choice(ok, scatter_points, replace=False))
        samples[name] = (sim.reshape(-1)[pick], z.reshape(-1)[pick])
        del sim
    content = {"shape": list(z.shape), "measures": measures, "paper": PAPER, "r2": r2}
    return SimilarityResult(content, samples)


def _nanmean(values: list) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _safe(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None
