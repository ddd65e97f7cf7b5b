"""Replay weights equal softmax(score / T) over the pool only, checked against probabilities
computed by hand from the raw scores (max-subtracted exp, normalized over the pool members with a
finite score; held-out and unscored examples weigh exactly 0), through the code that builds a replay
run's schedule (replay/experiment.py make_mixture) and its first draws."""

import dataclasses
import math
import types

import numpy as np
import pytest
from scipy import stats

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import as_experiment
from forgetting_jax.replay.experiment import Setup, make_mixture
from forgetting_jax.replay.sampler import softmax_weights
from forgetting_jax.replay.strategies import parse_strategy
from micro_demo import micro_config

T = 0.1
# Raw scores (forgetting) of 12 upstream examples. The held-out ones (0, 3, 7) score highest, so a
# softmax that let them in would move most of the mass; 9 is in the pool but unscored (NaN), 10 is
# neither.
SCORES = [0.45, 0.21, 0.05, 0.60, 0.30, -0.10, 0.12, 0.52, 0.26, float("nan"), float("nan"), 0.00]
HELDOUT = (0, 3, 7, 10)
POOL = [j not in HELDOUT for j in range(len(SCORES))]
DRAWS = 4000


def _by_hand(scores, pool, temperature):
    """softmax(score / T) over the pool members with a finite score, in plain Python."""
    members = [j for j, s in enumerate(scores) if pool[j] and math.isfinite(s)]
    top = max(scores[j] / temperature for j in members)
    e = {j: math.exp(scores[j] / temperature - top) for j in members}
    total = sum(e.values())
    return [e[j] / total if j in e else 0.0 for j in range(len(scores))]


EXPECTED = _by_hand(SCORES, POOL, T)


def _config(seed: int = 0):
    return as_experiment(micro_config(**{"replay.temperature": T, "replay.seed": seed}))


def _setup(config) -> Setup:
    n = len(SCORES)
    rng = np.random.default_rng(0)
    upstream = [Example(f"u{i}", "u", rng.integers(1, 100, 6).astype(np.int32), np.arange(6) > 0) for i in range(n)]
    up = types.SimpleNamespace(examples=upstream, scoring={"upstream": "upstream-fp"})
    return Setup(config, up, np.zeros((3, n)), np.asarray(POOL), None, None)


def _schedule(strategy: str, config):
    """The replay schedule of a run of `strategy` whose scores are SCORES (as the true row, or as
    the completed row of predicted strategies)."""
    scores = np.asarray(SCORES)
    if strategy == "ground_truth":
        truth, predicted = scores, {}
    else:
        truth, predicted = np.zeros(len(SCORES)), {"additive": scores}
    return make_mixture(_setup(config), "divide", parse_strategy(strategy), truth, np.arange(1, 6), predicted).schedule


def _probabilities(logits) -> list[float]:
    """The first draw's probabilities given the schedule's logits, in plain Python."""
    finite = [float(x) for x in logits if math.isfinite(x)]
    top = max(finite)
    e = [math.exp(float(x) - top) if math.isfinite(x) else 0.0 for x in logits]
    return [x / sum(e) for x in e]


def _chi2_p(draws, probabilities) -> float:
    p = np.asarray(probabilities)
    counts = np.bincount(draws, minlength=len(p))
    support = p > 0
    assert counts[~support].sum() == 0, f"drew examples of weight 0: {np.flatnonzero(counts * ~support)}"
    return stats.chisquare(counts[support], p[support] * len(draws)).pvalue


def test_the_hand_computed_weights_are_not_trivial():
    p = EXPECTED
    assert math.isclose(sum(p), 1.0) and all(p[j] == 0.0 for j in (0, 3, 7, 9, 10))
    assert max(p) / min(x for x in p if x > 0) > 50  # T = 0.1 makes the weights far from uniform
    # the alternatives the test must tell apart are far from EXPECTED
    with_heldout = _by_hand(SCORES, [True] * len(SCORES), T)
    assert sum(with_heldout[j] for j in (0, 3, 7, 10)) > 0.9
    assert max(abs(a - b) for a, b in zip(_by_hand(SCORES, POOL, 1.0), p)) > 0.2


@pytest.mark.parametrize("strategy", ["ground_truth", "predicted:additive"])
def test_replay_weights_are_the_softmax_over_the_pool(strategy):
    schedule = _schedule(strategy, _config())
    got = _probabilities(schedule.logits_N)
    assert got == pytest.approx(EXPECTED, rel=1e-12, abs=0)
    assert all(got[j] == 0.0 for j in (0, 3, 7, 9, 10))  # held-out and unscored: exactly 0
    # the sampler's own weights of the pool's scores agree
    pool_scores = np.where(POOL, SCORES, np.nan)
    assert softmax_weights(pool_scores, T).tolist() == pytest.approx(EXPECTED, rel=1e-12, abs=0)


def test_random_replay_is_uniform_over_the_pool():
    got = _probabilities(_schedule("random", _config()).logits_N)
    members = sum(POOL)
    assert got == pytest.approx([1 / members if POOL[j] else 0.0 for j in range(len(SCORES))], rel=1e-12, abs=0)


@pytest.mark.parametrize("strategy", ["ground_truth", "predicted:additive"])
def test_first_draws_of_replay_runs_follow_the_softmax_over_the_pool(strategy):
    """The first replayed example of runs that differ only in replay.seed, against EXPECTED; the same
    draws reject a softmax over every scored example and softmax(score / 1)."""
    base = _config()
    draws = np.asarray([_schedule(strategy, dataclasses.replace(base, replay=dataclasses.replace(base.replay, seed=s)))
                        .take([0])[0] for s in range(DRAWS)])
    assert _chi2_p(draws, EXPECTED) > 1e-3
    counts = np.bincount(draws, minlength=len(SCORES))
    assert counts[[0, 3, 7, 9, 10]].sum() == 0
    wrong_temperature = np.asarray(_by_hand(SCORES, POOL, 1.0))
    assert stats.chisquare(counts[np.asarray(POOL) & np.isfinite(SCORES)],
                           wrong_temperature[wrong_temperature > 0] * DRAWS).pvalue < 1e-6
