"""The final code's replay baselines (replay/baselines.py): gt_mir:N (repeated best of N by true
forgetting), ppl_median (median base perplexity first) and grad_prod_neg (negative gradient
products, range-scaled), checked against by-hand versions, and how replay runs use them."""

import types

import numpy as np
import pytest

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import as_experiment
from forgetting_jax.replay import baselines
from forgetting_jax.replay.experiment import Setup, make_mixture
from forgetting_jax.replay.sampler import FixedSchedule
from forgetting_jax.replay.strategies import parse_strategy
from micro_demo import micro_config


def _final_code_bofn(weights, sample_num, bofn, order):
    """The final code's repeated_bofn_sampling (data_utils/replay_helper.py) over a given group order,
    with each group ranked highest first (most forgotten: MIR)."""
    samples = []
    for pass_id in range(bofn):
        for start in range(0, len(order), bofn):
            group = order[start:start + bofn]
            cand = np.argsort(-weights[group], kind="stable")
            if pass_id < len(cand):
                samples.append(group[cand[pass_id]])
        if len(samples) >= sample_num:
            break
    return samples[:sample_num]


def test_gt_mir_takes_the_most_forgotten_of_each_group_of_n_first():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=60)
    pool = np.ones(60, bool)
    pool[:10] = False  # held out: never chosen
    truth[15] = np.nan  # unscored: never chosen
    seed = [0, 7]
    picked = baselines.repeated_best_of_n(truth, pool, 12, 4, seed)
    assert picked.shape == (12,) and len(set(picked.tolist())) == 12
    assert pool[picked].all() and 15 not in picked
    # the same examples as the final code's loop over the same seeded group order (then shuffled)
    candidates = np.flatnonzero(pool & np.isfinite(truth))
    order = candidates[np.random.Generator(np.random.PCG64([*seed, 2])).permutation(candidates.size)]
    expected = _final_code_bofn(truth, 12, 4, order)
    assert sorted(picked.tolist()) == sorted(int(j) for j in expected)
    # 49 candidates in 13 groups of 4: 12 picks are the maxima of the first 12 groups
    for start, j in zip(range(0, 48, 4), expected):
        assert truth[j] == truth[order[start:start + 4]].max()
    assert (baselines.repeated_best_of_n(truth, pool, 12, 4, seed) == picked).all()  # seeded
    more = baselines.repeated_best_of_n(truth, pool, 30, 4, seed)  # a second pass: the runners-up
    assert len(set(more.tolist())) == 30
    beyond = baselines.repeated_best_of_n(truth, pool, 100, 4, seed)  # more slots than the pool: repeats
    assert beyond.shape == (100,) and len(set(beyond.tolist())) == 49


def test_ppl_median_scores_put_median_perplexity_first():
    nll = np.asarray([5.0, 1.0, 3.0, 2.0, 4.0, 9.0, np.nan])
    pool = np.asarray([True, True, True, True, True, False, True])
    score = baselines.ppl_median_scores(nll, pool)
    assert np.isnan(score[5]) and np.isnan(score[6])
    # pool ranks by nll: 1.0 -> 0, 2.0 -> 1, 3.0 -> 2, 4.0 -> 3, 5.0 -> 4; q = rank / 4
    assert np.allclose(score[[1, 3, 2, 4, 0]], [-0.5, -0.25, 0.0, -0.25, -0.5])
    assert np.nanargmax(score) == 2


def test_grad_prod_neg_scores_are_negative_products_scaled_by_their_range():
    rng = np.random.default_rng(0)
    task, examples = rng.normal(size=16), rng.normal(size=(9, 16))
    pool = np.ones(9, bool)
    pool[0] = False
    score = baselines.grad_prod_neg_scores(task, examples, pool)
    raw = -(examples[1:] @ task)
    assert np.isnan(score[0])
    assert np.allclose(score[1:], raw / (raw.max() - raw.min()))
    assert np.isclose(np.nanmax(score) - np.nanmin(score), 1.0)


def test_the_strategy_grammar_has_the_baselines():
    mir = parse_strategy("gt_mir:30")
    assert (mir.kind, mir.candidates, mir.top) == ("gt_mir", 30, False)
    assert parse_strategy("ppl_median").top  # always its highest scores (predef_score_max)
    grad = parse_strategy("grad_prod_neg")
    assert grad.weighted and not grad.top and parse_strategy("top:grad_prod_neg").top
    for bad, message in [("gt_mir", "N >= 2"), ("gt_mir:1", "N >= 2"), ("top:gt_mir:4", "top:"),
                         ("top:ppl_median", "always"), ("grad_prod_neg:x", "takes no method")]:
        with pytest.raises(ValueError, match=message):
            parse_strategy(bad)


def _setup(n=40):
    config = as_experiment(micro_config(**{"train.steps": 20, "replay.ratio": 0.25}))
    rng = np.random.default_rng(0)
    upstream = [Example(f"u{i}", "u", rng.integers(1, 100, 6).astype(np.int32), np.arange(6) > 0) for i in range(n)]
    up = types.SimpleNamespace(examples=upstream, scoring={"upstream": "fp"}, base_nll=np.linspace(1, 3, n))
    pool = np.ones(n, bool)
    pool[:5] = False
    return Setup(config, up, np.zeros((3, n)), pool, None, None)


def test_replay_runs_of_the_baselines_replay_what_they_choose():
    setup = _setup()
    truth = np.linspace(-1, 1, 40)
    slots = setup.replay_slots()  # final protocol: floor(20 x 5 / 4) = 25 steps of 8, one in 5 replayed
    assert setup.replay_steps() == 25 and slots == 40
    mir = make_mixture(setup, "divide", parse_strategy("gt_mir:4"), truth, np.arange(5, 10), {})
    assert isinstance(mir.schedule, FixedSchedule)
    order = baselines.repeated_best_of_n(truth, setup.pool_N, slots, 4, [0, mir_code("divide")])
    assert (mir.schedule.take(np.arange(slots)) == order).all()
    median = make_mixture(setup, "divide", parse_strategy("ppl_median"), truth, np.arange(5, 10), {})
    first = median.schedule.take(np.arange(4))
    q = (np.arange(40) - 5) / 34  # pool ranks of the increasing base NLL, scaled
    assert set(first.tolist()) <= set(np.argsort(np.where(setup.pool_N, np.abs(q - 0.5), np.inf))[:6].tolist())
    grad = np.where(setup.pool_N, np.linspace(0, 1, 40), np.nan)
    drawn = make_mixture(setup, "divide", parse_strategy("grad_prod_neg"), truth, np.arange(5, 10),
                         {"grad_prod_neg": grad})
    assert drawn.inputs["gradient_dim"] == 1024 and "temperature" in drawn.inputs
    taken = drawn.schedule.take(np.arange(20))
    assert setup.pool_N[taken].all() and np.mean(taken) > 25  # T = 0.1 on a range of 1: mostly the top


def mir_code(task):
    from forgetting_jax.replay.strategies import task_code

    return task_code(task)
