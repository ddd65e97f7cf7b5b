"""The replay experiment's results (results.json): per strategy, the mean held-out forgetting
across test tasks with its confidence interval, the reduction against none, the paired tests
against random and none; with exact-match answers the same for the exact-match drop; and how well
each completion method's rows rank the pool's true forgetting."""

from typing import Any, Sequence

import numpy as np

from forgetting_jax.experiment.choices import Strategy
from forgetting_jax.replay.mixture import replay_fraction
from forgetting_jax.replay.stats import mean_ci, paired_tests


def _compare(values: dict[str, np.ndarray], chosen: Sequence[Strategy], confidence: float) -> tuple[dict, list]:
    """(per-strategy mean and CI, with the reduction vs none; paired tests vs random and none)."""
    summary = {}
    for s in chosen:
        entry = mean_ci(values[s.name], confidence)
        if "none" in values and s.name != "none":
            base = float(np.mean(values["none"]))
            entry["reduction_vs_none"] = (float(np.mean(values["none"] - values[s.name]) / base) if base
                                          else None)
        summary[s.name] = entry
    tests = []
    for s in chosen:
        for reference in ("random", "none"):
            if s.kind in ("none", "random") and not (s.kind == "random" and reference == "none"):
                continue
            if reference in values:
                tests.append({"strategy": s.name, "reference": reference,
                              **paired_tests(values[s.name], values[reference], confidence)})
    return summary, tests


def summarize(setup: Any, tasks: Sequence[str], chosen: Sequence[Strategy], forgetting: dict,
              truth_TxN: np.ndarray, predicted: dict[str, np.ndarray], dropped: dict | None = None) -> dict:
    """The results of a replay experiment (setup: replay/experiment.py Setup). forgetting, dropped:
    {strategy: {task: held-out NLL forgetting / exact-match drop}}."""
    from scipy import stats

    config, pool_N = setup.config, setup.pool_N
    rc = config.replay
    confidence = float(rc.confidence)
    ratio = replay_fraction(rc.ratio)
    steps = setup.replay_steps()
    replayed = setup.replay_slots()
    names = [s.name for s in chosen]
    values = {s.name: np.asarray([forgetting[s.name][t] for t in tasks]) for s in chosen}
    summary, tests = _compare(values, chosen, confidence)
    prediction = {}
    for method, rows in predicted.items():
        rho = [stats.spearmanr(rows[i][pool_N], truth_TxN[i][pool_N], nan_policy="omit").statistic
               for i in range(len(tasks))]
        prediction[method] = {"spearman_mean": float(np.nanmean(rho)), "spearman": [float(r) for r in rho]}
    heldout = setup.heldout
    results = {
        "settings": {"protocol": setup.protocol.name, "result_step": setup.protocol.result,
                     "ratio": str(ratio), "temperature": float(rc.temperature), "k": int(rc.k),
                     "num_heldout": len(heldout.examples) if heldout is not None else None,
                     "heldout": heldout.source if heldout is not None else None,
                     "pool": int(pool_N.sum()), "seed": int(rc.seed),
                     "train_steps": int(config.train.steps), "replay_steps": steps,
                     "scale_steps": bool(setup.protocol.scale_steps), "replayed_per_run": replayed,
                     "task_examples_per_run": steps * int(config.train.batch_size) - replayed,
                     "batch_size": int(config.train.batch_size), "confidence": confidence,
                     "gradient_dim": int(rc.gradient_dim)},
        "tasks": list(tasks), "strategies": names,
        "steps": {s.name: int(config.train.steps) if s.kind == "none" else steps for s in chosen},
        "forgetting": {name: dict(forgetting[name]) for name in names},
        "summary": summary, "tests": tests, "prediction": prediction,
    }
    if dropped is not None:
        em_values = {s.name: np.asarray([dropped[s.name].get(t, np.nan) for t in tasks]) for s in chosen}
        em_summary, em_tests = _compare(em_values, chosen, confidence)
        results["exact_match"] = {"drop": {name: dict(dropped[name]) for name in names}, "summary": em_summary,
                                  "tests": em_tests}
    return results
