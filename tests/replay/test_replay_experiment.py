"""`forgetting-jax replay` end to end on the micro demo (tests/micro_demo.py: 3 matrix tasks, 2 test
tasks, N = 50), on a workspace holding the matrix (its rows reused): every
strategy runs, held-out examples never enter a batch, results, table, figure and the report
section are written, and a second run reuses every run."""

import glob
import json
import os

import numpy as np
import pytest

from forgetting_jax.replay import mixture as mixture_lib
from forgetting_jax.replay.experiment import run_replay
from forgetting_jax.replay.heldout import split_upstream
from micro_demo import REPLAY_TEST_TASKS as TEST_TASKS
from micro_demo import copy_workspace
from micro_demo import micro_experiment

pytestmark = pytest.mark.slow

STRATEGIES = ("none", "random", "predicted:additive", "predicted:rep_dot", "ground_truth", "online:additive",
              "gt_mir:4", "ppl_median", "grad_prod_neg", "forecast")
WEIGHTED = 20  # the forecast files weigh the first 20 upstream examples only


def micro_config(workdir):
    """The micro demo (ratio 1/4, k = 5, 15 held-out examples) with every kind of strategy, under
    the default protocol (final: floor(6 x 5 / 4) = 7 steps per replay run, last steps kept);
    strategy forecast reads W/forecasts/<task>.jsonl."""
    return micro_experiment(**{"replay.strategies": STRATEGIES, "replay.gradient_dim": 128,
                               "replay.weights_file": os.path.join(workdir, "forecasts", "{task}.jsonl")})


def write_forecasts(workdir):
    """A forecast file per test task (the format of `forgetting-jax forecast`) that gives weight to
    the first WEIGHTED upstream examples of the matrix only."""
    ids = [str(i) for i in np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["example_ids"]]
    os.makedirs(os.path.join(workdir, "forecasts"))
    for task in TEST_TASKS:
        with open(os.path.join(workdir, "forecasts", f"{task}.jsonl"), "w") as f:
            for rank, example in enumerate(ids, start=1):
                weight = 1.0 / WEIGHTED if rank <= WEIGHTED else 0.0
                f.write(json.dumps({"id": example, "predicted": -rank, "rank": rank, "replay_weight": weight}) + "\n")


@pytest.fixture(scope="module")
def finished(micro_matrix, tmp_path_factory):
    """run_replay on a copy of the session's micro workspace (its matrix reused), recording every
    replayed upstream example."""
    workdir = copy_workspace(micro_matrix[0], str(tmp_path_factory.mktemp("replay") / "W"))
    write_forecasts(workdir)
    replayed = []  # (strategy, upstream index) of every replayed example
    step_slots, batches = mixture_lib.MixedBatches.step_slots, mixture_lib.ReplayMixture.batches

    def recording(self, step):
        replay, index = step_slots(self, step)
        replayed.extend((self.label, i) for i in index[replay].tolist())
        return replay, index

    def labelled(self, *args):
        out = batches(self, *args)
        out.label = self.label
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mixture_lib.MixedBatches, "step_slots", recording)
        patch.setattr(mixture_lib.ReplayMixture, "batches", labelled)
        results = run_replay(micro_config(workdir), workdir)
    return workdir, results, replayed


def test_every_strategy_runs_and_the_results_are_reported(finished):
    workdir, results, _ = finished
    assert results["tasks"] == list(TEST_TASKS) and results["strategies"] == list(STRATEGIES)
    for name in STRATEGIES:
        values = [results["forgetting"][name][t] for t in TEST_TASKS]
        assert np.isfinite(values).all()
        assert results["summary"][name]["n"] == 2 and results["summary"][name]["ci_low"] is not None
    assert sorted(results["trained"]) == sorted(f"{t}.{s}" for t in TEST_TASKS for s in STRATEGIES[1:])
    compared = {(t["strategy"], t["reference"]) for t in results["tests"]}
    assert {("predicted:additive", "random"), ("predicted:additive", "none"), ("random", "none")} <= compared
    settings = results["settings"]
    # final protocol: replay runs train floor(6 x (1 + 1/4)) = 7 steps: 56 slots, one in 5 replayed at r = 1/4
    assert settings["protocol"] == "final" and settings["result_step"] == "last"
    assert settings["replay_steps"] == 7 and settings["train_steps"] == 6
    assert settings["replayed_per_run"] == 11 and settings["pool"] == 35
    assert results["steps"] == {name: 6 if name == "none" else 7 for name in STRATEGIES}
    for task in TEST_TASKS:  # represented like the matrix's rows, for predicted:rep_dot
        assert len(glob.glob(os.path.join(workdir, "matrix", "representations", "tasks", task, "*.npz"))) == 1
    with open(os.path.join(workdir, "replay", "results.json")) as f:
        assert json.load(f)["strategies"] == list(STRATEGIES)
    assert os.path.getsize(os.path.join(workdir, "replay", "replay.png")) > 1000
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert report.startswith("# Forgetting report") and report.count("## Replay: preventing forgetting") == 1
    assert "predicted:additive vs random" in report and "](experiments/demo/replay/replay.png)" in report
    experiment = results["experiment_dir"]  # W/report.md and W/replay/ are copies of the experiment's own
    assert experiment == os.path.join(workdir, "experiments", "demo")
    with open(os.path.join(experiment, "report.md")) as f:
        own = f.read()
    assert own.count("## Replay: preventing forgetting") == 1 and "](replay/replay.png)" in own
    for name in ("results.json", "table.md", "replay.png"):
        with open(os.path.join(experiment, "replay", name), "rb") as a:
            with open(os.path.join(workdir, "replay", name), "rb") as b:
                assert a.read() == b.read()


def test_replay_runs_are_fingerprinted_runs_and_never_replay_the_heldout_set(finished):
    workdir, _, replayed = finished
    runs = {}
    for path in glob.glob(os.path.join(workdir, "tasks", "divide", "*", "run.json")):
        with open(path) as f:
            inputs = json.load(f)
        runs[inputs.get("mixture", {}).get("strategy", "none")] = os.path.dirname(path)
    assert sorted(runs) == sorted(STRATEGIES)
    assert all(os.path.isfile(os.path.join(d, "fingerprint.json")) for d in runs.values())
    assert os.path.isfile(os.path.join(runs["online:additive"], "replay_probe.npz"))
    with open(os.path.join(runs["random"], "fingerprint.json")) as f:
        record = json.load(f)
    assert record["steps"] == 7 and record["inputs"]["mixture"]["ratio"] == "1/4"
    assert record["inputs"]["mixture"]["protocol"] == "final"
    for name, d in runs.items():  # none trained train.steps, replay runs floor(train.steps (1 + r)), all kept the last
        with open(os.path.join(d, "fingerprint.json")) as f:
            done = json.load(f)
        assert done["steps"] == (6 if name == "none" else 7)
        assert done["inputs"]["train"]["result"] == "last"

    base_nll = np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["base_nll"]
    heldout, pool = split_upstream(base_nll, 15, 0)
    assert len(replayed) == 2 * 9 * 11  # 2 tasks x 9 replay strategies x 11 slots
    indices = [i for _, i in replayed]
    assert not set(indices) & set(heldout.tolist()) and pool[indices].all()
    by_forecast = {i for strategy, i in replayed if strategy == "forecast"}
    assert by_forecast and max(by_forecast) < WEIGHTED  # only what the forecast files weigh
    assert max(i for strategy, i in replayed if strategy == "random") >= WEIGHTED


def test_a_second_run_reuses_every_run(finished):
    workdir, first, _ = finished
    again = run_replay(micro_config(workdir), workdir)
    assert again["trained"] == []
    assert again["forgetting"] == first["forgetting"]
    with open(os.path.join(workdir, "report.md")) as f:
        assert f.read().count("## Replay: preventing forgetting") == 1


def test_test_tasks_must_not_be_rows_of_the_matrix(finished):
    workdir, _, _ = finished
    with pytest.raises(ValueError, match="rows of the matrix"):
        run_replay(micro_config(workdir), workdir, tasks=["add"])
    with pytest.raises(ValueError, match="strategy"):
        run_replay(micro_config(workdir), workdir, strategies=["predicted"])


def test_strategy_forecast_needs_a_file_for_every_test_task(finished):
    workdir, _, _ = finished
    config = micro_config(os.path.join(workdir, "elsewhere"))
    with pytest.raises(ValueError, match=r"elsewhere/forecasts/divide.jsonl.*no such file"):
        run_replay(config, workdir, strategies=["none", "forecast"])
    config = micro_experiment(**{"replay.strategies": STRATEGIES})
    with pytest.raises(ValueError, match="needs replay.weights_file"):
        run_replay(config, workdir, strategies=["none", "forecast"])
