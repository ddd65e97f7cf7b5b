"""`forgetting-jax forecast` on the micro demo: a task outside the matrix fine-tuned and exported,
k of its upstream examples scored (exactly the forgetting scoring all of them gives there), the
row completed, ranked and written; --verify; a checkpoint of another base refused by name."""

import json
import os
import shutil

import numpy as np
import pytest

from forgetting_jax.forecast.checkpoint import ForecastError
from forgetting_jax.forecast.forecast import ForecastSettings, forecast
from forgetting_jax.forecast.output import write_forecast
from micro_demo import copy_workspace, micro_experiment
from command_line import keep_pytest_stderr, run_cli

pytestmark = pytest.mark.slow


def setup_module():
    keep_pytest_stderr()


@pytest.fixture(scope="module")
def held_out(micro_matrix, tmp_path_factory):
    """(W, the matrix file, the run directory of `divide` fine-tuned and exported, its true row [N])."""
    from forgetting_jax.matrix.rows import score_params
    from forgetting_jax.matrix.upstream import prepare_upstream
    from forgetting_jax.models.loading import load_model
    from forgetting_jax.train.finetune import finetune

    workdir = copy_workspace(micro_matrix[0], str(tmp_path_factory.mktemp("forecast") / "W"))
    config = micro_experiment()
    run = finetune(config, workdir, "divide")  # exported: W/tasks/divide/<fp>/model
    up = prepare_upstream(config, workdir)
    model_config, params = load_model(run.model_dir)
    nll = score_params(model_config, params, up.examples, up.tokens_per_batch, "divide", None)[0]
    truth = nll.astype(np.float64) - up.base_nll  # the row scored in full
    matrix = os.path.join(workdir, "experiments", "demo", "forgetting.npz")
    return workdir, matrix, os.path.dirname(run.model_dir), truth


def test_the_forecast_scores_k_examples_exactly_and_ranks_every_one(held_out, tmp_path):
    _, matrix, run_dir, truth = held_out
    result = forecast(matrix, run_dir, ForecastSettings(k=10, method="additive", verify=5))
    s = result.summary
    assert s["base_check"] == {"base_fingerprint": "same", "tokenizer": "same"} and s["checkpoint"] == "run"
    assert s["task"] == "divide" and s["scored_examples"] == 10 + 2 * 5
    columns = np.asarray(s["scored_columns"])
    assert len(columns) == 10 == len(set(columns.tolist()))
    for j, value in result.observed.items():  # scoring a few = scoring all, at those columns
        assert value == pytest.approx(truth[j], abs=2e-5)
    np.testing.assert_allclose(result.predicted_N[columns], truth[columns], atol=2e-5)
    lines = result.lines()
    assert len(lines) == 50 and [line["rank"] for line in lines] == list(range(1, 51))
    predicted = [line["predicted"] for line in lines]
    assert predicted == sorted(predicted, reverse=True)
    assert sum(line["replay_weight"] for line in lines) == pytest.approx(1.0)
    assert sum("observed" in line for line in lines) == 20
    v = s["verify"]
    assert v["n"] == 5 and 0.0 <= v["precision_top"] <= 1.0 and np.isfinite(v["gap"])
    summary = write_forecast(str(tmp_path / "f.jsonl"), result)
    assert summary == str(tmp_path / "f.summary.json")
    with open(tmp_path / "f.jsonl") as f:
        assert [json.loads(line)["id"] for line in f] == [line["id"] for line in lines]


def test_method_auto_picks_the_protocols_best_and_the_command_writes_both_files(held_out, tmp_path, capsys):
    _, matrix, run_dir, _ = held_out
    out = tmp_path / "forecast.jsonl"
    code = run_cli("forecast", f"--matrix={matrix}", f"--model={run_dir}", "--k=8", f"--output={out}")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    with open(tmp_path / "forecast.summary.json") as f:
        summary = json.load(f)
    rmse = {m: v for m, v in summary["protocol_rmse"].items() if v is not None}
    assert summary["method"] == min(rmse, key=rmse.get)
    assert "most forgotten (predicted)" in printed.out and len(out.read_text().splitlines()) == 50


def test_a_checkpoint_of_another_base_is_refused_by_name(held_out, tmp_path):
    _, matrix, run_dir, _ = held_out
    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    with open(other / "run.json") as f:
        inputs = json.load(f)
    inputs["base"] = "0123456789abcdef"
    with open(other / "run.json", "w") as f:
        json.dump(inputs, f)
    with pytest.raises(ForecastError, match="fine-tuned from base 0123456789abcdef"):
        forecast(matrix, str(other), ForecastSettings(k=5, method="additive"))
    result = forecast(matrix, str(other), ForecastSettings(k=5, method="additive",
                                                           base=os.path.join(run_dir, "model")))
    assert result.summary["base_check"]["base_fingerprint"] == "rescored"
    np.testing.assert_allclose(list(result.observed.values()), 0.0, atol=1e-5)  # the model against itself


def test_bad_inputs_end_in_one_line(held_out, tmp_path, capsys):
    _, matrix, run_dir, _ = held_out
    out = f"--output={tmp_path / 'f.jsonl'}"
    for args, message in [((f"--matrix={tmp_path / 'absent.npz'}", f"--model={run_dir}"), "absent.npz: no such file"),
                          ((f"--matrix={matrix}", f"--model={tmp_path}"), "no config.json"),
                          ((f"--matrix={matrix}", f"--model={run_dir}", "--k=50"), "--k=50")]:
        assert run_cli("forecast", *args, out) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "f.jsonl")
