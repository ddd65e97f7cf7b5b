"""Optimizer steps of replay runs. replay.protocol=final (the default, the paper's final code): a
replay run trains floor(train.steps (1 + r)) steps and every run keeps its last step. protocol=project:
every strategy, `none` included, runs train.steps; replay.scale_steps=True runs
ceil(train.steps (1 + r)). Settings that train differently never share a run (they fingerprint
differently)."""

import math
import os
import types
from fractions import Fraction

import numpy as np
import pytest

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import as_experiment
from forgetting_jax.replay.experiment import Setup, make_mixture, summarize
from forgetting_jax.replay.mixture import mixed_steps, replay_positions
from forgetting_jax.replay.report import render_section
from forgetting_jax.replay.strategies import parse_strategy
from forgetting_jax.train.base import BaseModel
from forgetting_jax.train.finetune import plan_finetune
from forgetting_jax.train.recipe import mixed_settings
from forgetting_jax.utils.fingerprint import fingerprint
from micro_demo import micro_config

N = 40
TOKENIZER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "forgetting_jax", "resources", "demo_tokenizer")


def _config(scale_steps: bool | None = None, steps: int = 50, ratio: float = 1 / 8, protocol: str = "project"):
    changes = {"train.steps": steps, "replay.ratio": ratio, "replay.protocol": protocol}
    if scale_steps is not None:
        changes["replay.scale_steps"] = scale_steps
    return as_experiment(micro_config(**changes))


def _setup(config) -> Setup:
    rng = np.random.default_rng(0)
    upstream = [Example(f"u{i}", "u", rng.integers(1, 100, 6).astype(np.int32), np.arange(6) > 0) for i in range(N)]
    pool = np.ones(N, bool)
    pool[:5] = False
    up = types.SimpleNamespace(examples=upstream, scoring={"upstream": "upstream-fp"})
    return Setup(config, up, np.zeros((3, N)), pool, None, None)


def _mixture(config, strategy: str = "random"):
    truth = np.linspace(0.0, 1.0, N)
    return make_mixture(_setup(config), "divide", parse_strategy(strategy), truth, np.arange(5, 10), {})


def _run_steps(config, mixture) -> int:
    """The optimizer steps of the run (the driver's cadence and the optimizer's schedule use them)."""
    return int(mixed_settings(config.train, mixture).steps)


@pytest.mark.parametrize("strategy", ["random", "ground_truth"])
def test_by_default_every_strategy_runs_train_steps(strategy):
    config = _config()
    assert config.replay.scale_steps is False
    none, replay = _run_steps(config, None), _run_steps(config, _mixture(config, strategy))
    assert none == replay == 50
    # the replayed examples take r / (1 + r) of the slots: 400 slots at r = 1/8, floor(400 / 9) replayed
    replayed = int(replay_positions(0, 50 * 8, Fraction(1, 8))[0].sum())
    assert replayed == 44


@pytest.mark.parametrize("steps,ratio", [(50, 1 / 8), (1000, 1 / 32), (6, 0.25), (7, 0.3)])
def test_scale_steps_runs_ceil_steps_times_one_plus_r(steps, ratio):
    config = _config(scale_steps=True, steps=steps, ratio=ratio)
    r = Fraction(ratio).limit_denominator(1 << 16)
    expected = -(-steps * (r.denominator + r.numerator) // r.denominator)  # ceil(steps (1 + r)) in integers
    assert expected == math.ceil(steps * (1 + ratio) - 1e-9)
    assert _run_steps(config, _mixture(config)) == expected > steps
    assert _run_steps(config, None) == steps  # none is never scaled
    assert mixed_steps(steps, r, scale_steps=True) == expected and mixed_steps(steps, r) == steps


def test_the_two_settings_fingerprint_differently(tmp_path):
    default, scaled = _config(), _config(scale_steps=True)
    a, b = _mixture(default), _mixture(scaled)
    assert a.inputs["scale_steps"] is False and b.inputs["scale_steps"] is True
    # the mixture's own share of the fingerprint differs, not only the steps the run trains
    assert {k: v for k, v in a.inputs.items() if k != "scale_steps"} == \
        {k: v for k, v in b.inputs.items() if k != "scale_steps"}
    assert fingerprint(a.inputs) != fingerprint(b.inputs)
    base = BaseModel(types.SimpleNamespace(vocab_size=4096), "base-fp", "", "", "", TOKENIZER_DIR, {})
    plans = {name: plan_finetune(config, str(tmp_path), "divide", base, mixture)
             for name, config, mixture in [("none", default, None), ("replay", default, a), ("scaled", scaled, b)]}
    assert len({p.fingerprint for p in plans.values()}) == 3 and len({p.run_dir for p in plans.values()}) == 3
    assert [p.inputs["train"]["steps"] for p in plans.values()] == [50, 50, 57]
    assert plans["replay"].inputs["mixture"]["scale_steps"] is False
    assert plans["scaled"].inputs["mixture"]["scale_steps"] is True


def test_online_switch_step_follows_the_run_steps():
    for scale_steps, switch in [(False, 15), (True, 17)]:  # round(0.3 x 50), round(0.3 x 57)
        config = _config(scale_steps=scale_steps)
        assert _mixture(config, "online:additive").inputs["online"]["switch_step"] == switch


@pytest.mark.parametrize("scale_steps", [False, True])
def test_results_and_report_give_the_steps_of_each_strategy(scale_steps):
    config = _config(scale_steps=scale_steps)
    chosen = [parse_strategy(s) for s in ("none", "random", "ground_truth")]
    tasks = ["divide", "to_hex", "palindrome"]
    forgetting = {"none": dict(zip(tasks, [0.31, 0.22, 0.47])), "random": dict(zip(tasks, [0.27, 0.21, 0.33])),
                  "ground_truth": dict(zip(tasks, [0.19, 0.12, 0.36]))}
    results = summarize(_setup(config), tasks, chosen, forgetting, np.zeros((3, N)), {})
    replay_steps = 57 if scale_steps else 50
    assert results["steps"] == {"none": 50, "random": replay_steps, "ground_truth": replay_steps}
    s = results["settings"]
    assert s["scale_steps"] is scale_steps and s["train_steps"] == 50 and s["replay_steps"] == replay_steps
    assert s["replayed_per_run"] == replay_steps * 8 // 9
    assert s["task_examples_per_run"] == replay_steps * 8 - replay_steps * 8 // 9
    text = render_section(results, "replay.png")
    assert "| optimizer steps |" in text
    assert "| random | " in text and text.count(f" {replay_steps} |") >= 2
    if scale_steps:
        assert "Replay runs ran 57 optimizer steps of 8 examples, none 50" in text
        assert "saw 406 task examples to none's 400" in text
    else:
        assert "every strategy, none included, ran 50 optimizer steps of 8 examples" in text
        assert "replayed examples took 44 of a replay run's 400 batch slots, so it saw 356 task examples" in text


def test_scale_steps_is_a_typed_config_field():
    from forgetting_jax.experiment import ConfigError, default_config, parse

    config = default_config()
    assert config.replay.scale_steps is False and parse(config).replay.scale_steps is False
    config.replay.scale_steps = True
    assert parse(config).replay.scale_steps is True
    plain = config.to_dict()
    plain["replay"]["scale_steps"] = "yes"
    with pytest.raises(ConfigError, match="replay.scale_steps"):
        parse(plain)


@pytest.mark.parametrize("steps,ratio,expected", [(50, 1 / 8, 56), (1000, 1 / 32, 1031), (6, 0.25, 7), (7, 0.3, 9)])
def test_the_final_protocol_runs_floor_steps_times_one_plus_r_and_keeps_the_last_step(steps, ratio, expected):
    config = _config(steps=steps, ratio=ratio, protocol="final")
    assert expected == math.floor(steps * (1 + ratio) + 1e-9)  # the final code's int(max_steps * (1 + r))
    mixture = _mixture(config)
    assert _run_steps(config, mixture) == expected and mixture.inputs["protocol"] == "final"
    setup = _setup(config)
    assert setup.protocol.result == "last" and setup.config.train.result == "best"  # the runs' config is planned:
    planned = setup.protocol.run_config(config)
    assert planned.train.result == "last"
    base = BaseModel(types.SimpleNamespace(vocab_size=4096), "base-fp", "", "", "", TOKENIZER_DIR, {})
    final = plan_finetune(planned, "/tmp/unused", "divide", base)
    project = plan_finetune(config, "/tmp/unused", "divide", base)
    assert final.inputs["train"]["result"] == "last" and "result" not in project.inputs["train"]
    assert final.fingerprint != project.fingerprint  # a last-step run never reuses a best-step run


def test_the_protocols_hold_out_their_sizes():
    from forgetting_jax.replay.protocol import protocol

    final, project = (protocol(_config(protocol=p)) for p in ("final", "project"))
    assert final.num_heldout(0, 141_871) == 10_000 and project.num_heldout(0, 141_871) == 1_000
    assert final.num_heldout(0, 2_000) == 1_000 == project.num_heldout(0, 2_000)  # at most half
    assert final.num_heldout(15, 50) == 15  # replay.num_heldout > 0 wins
    assert protocol(_config(protocol="final", scale_steps=False)).replay_steps(50, Fraction(1, 8)) == 56
