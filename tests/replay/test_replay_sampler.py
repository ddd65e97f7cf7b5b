"""The replay sampler and mixture: draws follow softmax(score / T) without replacement, held-out
examples are never drawn, a resumed stream equals the uninterrupted one, the ratio is exact."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from forgetting_jax.data.records import Example
from forgetting_jax.replay.mixture import ReplayMixture, mixed_steps, replay_fraction, replay_positions
from forgetting_jax.replay.sampler import ReplaySchedule, replay_logits, softmax_weights
from forgetting_jax.replay.stats import mean_ci, paired_tests
from forgetting_jax.replay.strategies import OnlineSchedule, parse_strategy
from forgetting_jax.train.batches import BatchSettings

SCORES = np.array([0.30, 0.25, 0.20, 0.12, 0.05, 0.0, -0.1, np.nan, 0.28, 0.15])
T = 0.1


def _draws(slot: int, runs: int, logits: np.ndarray) -> np.ndarray:
    return np.array([ReplaySchedule(logits, [7, seed]).take([slot])[0] for seed in range(runs)])


def _chi2_p(draws: np.ndarray, probabilities: np.ndarray) -> float:
    support = probabilities > 0
    counts = np.bincount(draws, minlength=len(probabilities))
    assert counts[~support].sum() == 0
    return stats.chisquare(counts[support], probabilities[support] * len(draws)).pvalue


def test_first_draws_follow_the_softmax_weights():
    logits = replay_logits(SCORES, T)
    p = softmax_weights(SCORES, T)
    assert p[7] == 0 and np.isclose(p.sum(), 1.0)
    assert _chi2_p(_draws(0, 6000, logits), p) > 1e-3


def test_second_draws_follow_sampling_without_replacement():
    logits = replay_logits(SCORES, T)
    p = softmax_weights(SCORES, T)
    # P(j second) = sum_i p_i p_j / (1 - p_i), i != j
    second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(len(p)) if i != j) for j in range(len(p))])
    assert np.isclose(second.sum(), 1.0)
    draws = _draws(1, 6000, logits)
    assert _chi2_p(draws, second) > 1e-3
    assert _chi2_p(draws, p) < 1e-6  # with replacement would be another distribution


def test_heldout_and_unscored_examples_are_never_drawn_and_passes_cover_the_pool():
    n = 40
    allowed = np.ones(n, bool)
    heldout = np.array([3, 11, 17, 30])
    allowed[heldout] = False
    scores = np.random.default_rng(0).normal(size=n)
    scores[5] = np.nan
    schedule = ReplaySchedule(replay_logits(scores, T, allowed), [1, 2])
    order = schedule.take(np.arange(35 * 3))  # three whole passes over the 35 pool examples
    assert not set(order.tolist()) & (set(heldout.tolist()) | {5})
    for k in range(3):
        assert sorted(order[35 * k:35 * (k + 1)].tolist()) == sorted(set(range(n)) - set(heldout.tolist()) - {5})
    top = ReplaySchedule(replay_logits(scores, T, allowed), [1, 2], top=True).take(np.arange(35))
    assert list(top) == [j for j in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
                         if allowed[j] and j != 5]


def test_schedule_is_a_function_of_the_seed_and_the_slot():
    logits = replay_logits(SCORES, T)
    a = ReplaySchedule(logits, [0, 5]).take(np.arange(30))
    b = ReplaySchedule(logits, [0, 5])
    np.testing.assert_array_equal(b.take(np.arange(29, 12, -1)), a[29:12:-1])
    assert not np.array_equal(ReplaySchedule(logits, [0, 6]).take(np.arange(30)), a)


@pytest.mark.parametrize("ratio,period", [(1 / 8, 9), (1 / 32, 33), (0.25, 5)])
def test_the_mixture_ratio_is_exact(ratio, period):
    r = replay_fraction(ratio)
    assert r == Fraction(1, period - 1)
    replay, index = replay_positions(0, 40 * period, r)
    assert replay.sum() == 40 and all(replay[period - 1::period])
    np.testing.assert_array_equal(index[replay], np.arange(40))  # replay slots 0, 1, 2, ...
    np.testing.assert_array_equal(index[~replay], np.arange(40 * (period - 1)))  # task positions 0, 1, 2, ...
    for first in (0, 7, 123):  # any window agrees with the whole stream
        w_replay, w_index = replay_positions(first, 50, r)
        np.testing.assert_array_equal(w_replay, replay[first:first + 50])
        np.testing.assert_array_equal(w_index, index[first:first + 50])
    steps, batch = 100, 8
    assert mixed_steps(steps, r) == steps  # the default: the optimizer steps of a run without replay
    total = mixed_steps(steps, r, scale_steps=True)
    assert total == -(-steps * period // (period - 1))
    replay, _ = replay_positions(0, total * batch, r)
    assert (~replay).sum() >= steps * batch > (~replay).sum() - batch  # the task examples of `steps` steps


def _examples(prefix: str, count: int, seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = int(rng.integers(4, 12))
        out.append(Example(f"{prefix}{i}", prefix, rng.integers(1, 100, n).astype(np.int32), np.arange(n) > 0))
    return out


SETTINGS = BatchSettings(batching="examples", batch_size=8, micro_batches=2, micro_rows=4, row_length=32,
                         max_segments=8, seed=3)


def _mixture(schedule, scale_steps=False):
    upstream = _examples("u", 30, 1)
    return ReplayMixture(upstream, schedule, 1 / 8, {"strategy": "test"}, scale_steps=scale_steps), upstream


def test_a_resumed_stream_equals_the_uninterrupted_one(tmp_path):
    tasks = _examples("t", 20, 0)
    logits = replay_logits(np.linspace(0, 1, 30), T)
    mixture, upstream = _mixture(ReplaySchedule(logits, [0, 1]))
    batches = mixture.batches(tasks, SETTINGS, str(tmp_path))
    total = mixture.total_steps(20)
    assert total == 20  # the steps of a run without replay; with scale_steps, ceil(20 x 9 / 8)
    assert _mixture(ReplaySchedule(logits, [0, 1]), scale_steps=True)[0].total_steps(20) == 23
    uninterrupted = [batches.batch(step) for step in range(total)]
    resumed_mixture, _ = _mixture(ReplaySchedule(logits, [0, 1]))
    resumed = resumed_mixture.batches(tasks, SETTINGS, str(tmp_path))
    for step in range(11, total):
        a, b = resumed.batch(step), uninterrupted[step]
        for field in ("tokens", "targets", "loss_mask", "segment_ids", "positions", "example_index"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    kinds = np.concatenate([batches.step_slots(step)[0] for step in range(total)])
    assert kinds.sum() == total * 8 // 9 == 17 and (~kinds).sum() == 20 * 8 - 17
    replay, index = batches.step_slots(0)  # stream positions 0-7: task positions 0-7
    assert not replay.any() and index.tolist() == batches.tasks.stream(0, 8)
    replay, index = batches.step_slots(1)  # position 8 is replay slot 0, then task positions 8-14
    assert replay.tolist() == [True] + [False] * 7
    assert index.tolist() == [mixture.schedule.take([0])[0]] + batches.tasks.stream(8, 7)
    # replayed examples keep their own masks: every token after the first is trained
    step = 1
    rows = uninterrupted[step]
    assert rows.loss_mask.sum() == sum(
        (len(upstream[i]) - 1) if r else int(tasks[i].mask[1:].sum()) for r, i in zip(*batches.step_slots(step)))


def test_online_schedule_switches_once_masks_replayed_examples_and_resumes_from_its_probe(tmp_path):
    n = 30
    allowed = np.ones(n, bool)
    allowed[:4] = False
    uniform = replay_logits(np.zeros(n), 1.0, allowed)
    predicted = np.linspace(0.0, 1.0, n)
    calls = []

    def probe(params_fn):
        calls.append(params_fn())
        return {"columns": np.arange(5), "values": np.zeros(5), "predicted": predicted}

    def online():
        return OnlineSchedule(ReplaySchedule(uniform, [0, 1]), 4, probe, T, allowed, [0, 1], top=True)

    schedule = online()
    mixture = ReplayMixture(_examples("u", n, 1), schedule, 1 / 8, {})
    mixture.batches(_examples("t", 20, 0), SETTINGS, str(tmp_path))
    first = schedule.first_slot
    assert first == 3  # 4 steps x 8 examples, one in 9 replayed
    early = schedule.take(np.arange(first))
    for step in range(5):
        mixture.after_step(step, lambda: "params")
    assert calls == ["params"]
    later = schedule.take(np.arange(first, first + 10))
    best = [j for j in np.argsort(-predicted) if allowed[j] and j not in early]
    assert list(later) == best[:10]
    assert not set(early) & set(later) and (allowed[early]).all()

    resumed = online()
    ReplayMixture(_examples("u", n, 1), resumed, 1 / 8, {}).batches(_examples("t", 20, 0), SETTINGS, str(tmp_path))
    np.testing.assert_array_equal(resumed.take(np.arange(first + 10)), np.concatenate([early, later]))
    assert calls == ["params"]  # read from the run directory, not probed again


def test_strategy_names():
    assert parse_strategy("top:predicted:als").top and parse_strategy("top:predicted:als").method == "als"
    assert parse_strategy("online:knn").kind == "online"
    for bad in ("predicted", "predicted:nope", "top:random", "random:additive", "sometimes"):
        with pytest.raises(ValueError):
            parse_strategy(bad)


T_975_DF5 = 2.570582  # the 0.975 quantile of Student's t with 5 degrees of freedom (statistical tables)


def _t_two_sided_p_df5(t: float) -> float:
    """Two-sided p of Student's t with 5 degrees of freedom, closed form (Abramowitz & Stegun 26.7.3):
    P(|T| < t) = 2/pi (theta + sin theta (cos theta + 2/3 cos^3 theta)), theta = atan(|t| / sqrt(5))."""
    theta = math.atan(abs(t) / math.sqrt(5))
    return 1 - 2 / math.pi * (theta + math.sin(theta) * (math.cos(theta) + 2 / 3 * math.cos(theta) ** 3))


def _sd(x) -> float:
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))


def test_confidence_intervals_follow_the_t_formula():
    a = [0.50, 0.42, 0.61, 0.55, 0.47, 0.52]
    ci = mean_ci(np.array(a), 0.95)
    mean, half = sum(a) / 6, T_975_DF5 * _sd(a) / math.sqrt(6)
    assert ci["n"] == 6 and ci["mean"] == pytest.approx(mean, rel=1e-12)
    assert ci["ci_low"] == pytest.approx(mean - half, rel=1e-6)
    assert ci["ci_high"] == pytest.approx(mean + half, rel=1e-6)
    assert mean_ci(np.array([0.3, np.nan]))["ci_low"] is None and mean_ci(np.array([0.3, np.nan]))["mean"] == 0.3


def test_paired_statistics():
    a = np.array([0.50, 0.42, 0.61, 0.55, 0.47, 0.52])
    b = a + np.array([0.05, 0.03, 0.06, 0.02, 0.04, 0.05])
    d = [float(x) for x in a - b]
    test = paired_tests(a, b)
    assert test["n"] == 6 and test["a_lower"] == 6
    # the paired t statistic mean(d) / (sd(d) / sqrt(n)), its p and the CI of mean(d), by hand
    mean, se = sum(d) / 6, _sd(d) / math.sqrt(6)
    assert mean == pytest.approx(-0.25 / 6) and se == pytest.approx(0.0060093, rel=1e-4)
    assert test["difference_mean"] == pytest.approx(mean, rel=1e-12)
    assert test["t"] == pytest.approx(mean / se, rel=1e-9) and test["t"] == pytest.approx(-6.934, abs=1e-3)
    assert test["t_p"] == pytest.approx(_t_two_sided_p_df5(mean / se), rel=1e-6)
    assert test["t_p"] == pytest.approx(0.000958, abs=1e-6)
    assert test["difference_ci_low"] == pytest.approx(mean - T_975_DF5 * se, rel=1e-6)
    assert test["difference_ci_high"] == pytest.approx(mean + T_975_DF5 * se, rel=1e-6)
    # Wilcoxon: every difference negative, so W = min(W+, W-) = 0 and the exact two-sided p is
    # 2 / 2^6 (only the all-negative and all-positive sign patterns are as extreme)
    assert test["wilcoxon"] == 0 and test["wilcoxon_p"] == pytest.approx(2 / 64)
    assert paired_tests(a, a)["t_p"] is None and paired_tests(a, a)["wilcoxon_p"] is None


def test_wilcoxon_signed_rank_by_enumeration():
    # differences 1.5, -0.5, 2.5, -3.5, 4.5, 5.5: |d| ranks 2, 1, 3, 4, 5, 6, so W+ = 2+3+5+6 = 16 and
    # W- = 1+4 = 5; W = min = 5. Exact two-sided p: the share of the 2^6 equally likely sign patterns
    # whose W+ is at most 5 or at least 21 - 5 = 16.
    d = [1.5, -0.5, 2.5, -3.5, 4.5, 5.5]
    b = np.array([0.2, 0.9, 0.1, 0.7, 0.4, 0.3])
    test = paired_tests(b + np.array(d), b)
    ranks = {abs(x): r for r, x in enumerate(sorted(d, key=abs), start=1)}
    w_plus = sum(ranks[abs(x)] for x in d if x > 0)
    w_minus = sum(ranks[abs(x)] for x in d if x < 0)
    assert (w_plus, w_minus) == (16, 5)
    extreme = 0
    for signs in range(1 << 6):
        w = sum(r for r in range(1, 7) if signs >> (r - 1) & 1)
        extreme += w <= 5 or w >= 16
    assert extreme == 20
    assert test["wilcoxon"] == pytest.approx(5.0) and test["wilcoxon_p"] == pytest.approx(extreme / 64)
    assert test["a_lower"] == 2 and test["n"] == 6
