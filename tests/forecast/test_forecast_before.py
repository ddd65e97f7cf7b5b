"""`forgetting-jax forecast --task_data`: the row of a task not fine-tuned yet, from its training
data's representation by the base model, on the micro demo's matrix (which holds the base's
representations): a matrix row's own training data gives back that row's representation, the
command writes a ranked forecast, and what it cannot do is refused by name."""

import json
import os

import numpy as np
import pytest

from command_line import keep_pytest_stderr, run_cli
from forgetting_jax.analysis.matrix_file import read_matrix_file
from forgetting_jax.data.demo.tasks import suite_records
from forgetting_jax.forecast.before import base_dir, forecast_before, task_representation
from forgetting_jax.forecast.checkpoint import ForecastError
from forgetting_jax.forecast.forecast import ForecastSettings

pytestmark = pytest.mark.slow


def setup_module():
    keep_pytest_stderr()


def write_task(path, task) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in suite_records([task], "train"))
    return str(path)


@pytest.fixture(scope="module")
def matrix(micro_matrix):
    return os.path.join(micro_matrix[0], "experiments", "demo", "forgetting.npz")


def test_a_rows_own_training_data_gives_its_representation(matrix, tmp_path):
    from forgetting_jax.models.loading import load_model, load_tokenizer

    data = read_matrix_file(matrix)
    base = base_dir(data, matrix, None)
    assert base == os.path.normpath(os.path.join(os.path.dirname(matrix), "..", "..", data["base_model_dir"]))
    config, params = load_model(base)
    i = list(data["tasks"]).index("add")
    rep = task_representation(data, matrix, write_task(tmp_path / "add.jsonl", "add"), "chat", config, params,
                              load_tokenizer(base), 4096)
    assert int(rep["task_example_count"][0]) == int(data["task_example_count"][i])
    np.testing.assert_allclose(rep["task_embeddings"][0], data["task_embeddings"][i], atol=1e-4)
    np.testing.assert_allclose(rep["task_example_last_hidden"][0], data["task_example_last_hidden"][i], atol=1e-4)


def test_the_command_forecasts_a_new_task_before_fine_tuning(matrix, tmp_path, capsys):
    task_data = write_task(tmp_path / "divide.jsonl", "divide")
    out = tmp_path / "f.jsonl"
    code = run_cli("forecast", f"--matrix={matrix}", f"--task_data={task_data}", f"--output={out}")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 50 and [line["rank"] for line in lines] == list(range(1, 51))
    assert all("observed" not in line for line in lines)
    assert sum(line["replay_weight"] for line in lines) == pytest.approx(1.0)
    with open(tmp_path / "f.summary.json") as f:
        summary = json.load(f)
    rmse = summary["protocol_rmse"]
    assert summary["method"] == min(rmse, key=rmse.get) and set(rmse) == {"rep_sim", "train_mean"}
    assert "forecast before fine-tuning" in printed.out
    # rep_sim named: the new task's row differs from the training rows' mean row
    by_rep_sim = forecast_before(matrix, task_data, ForecastSettings(method="rep_sim"))
    by_mean = forecast_before(matrix, task_data, ForecastSettings(method="train_mean"))
    assert np.isfinite(by_rep_sim.predicted_N).all() and not np.allclose(by_rep_sim.predicted_N, by_mean.predicted_N)


def test_what_cannot_be_forecast_is_refused_by_name(matrix, tmp_path, capsys):
    task_data = write_task(tmp_path / "divide.jsonl", "divide")
    with pytest.raises(ForecastError, match="--verify needs --model"):
        forecast_before(matrix, task_data, ForecastSettings(verify=2))
    with pytest.raises(ForecastError, match="--method=als: with --task_data"):
        forecast_before(matrix, task_data, ForecastSettings(method="als"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    with pytest.raises(ForecastError, match="bad.jsonl"):
        forecast_before(matrix, str(bad), ForecastSettings(method="rep_sim"))
    data = {k: v for k, v in np.load(matrix).items() if k != "task_embeddings"}
    stripped = tmp_path / "no_reps.npz"
    np.savez(stripped, **data)
    with pytest.raises(ForecastError, match="no field 'task_embeddings'.*matrix.representations=True"):
        forecast_before(str(stripped), task_data, ForecastSettings())
    moved = dict(np.load(matrix).items())
    np.savez(tmp_path / "moved.npz", **moved)  # beside no workspace: its base is not found
    with pytest.raises(ForecastError, match="is not found beside it.*--base=DIR"):
        forecast_before(str(tmp_path / "moved.npz"), task_data, ForecastSettings())
    assert run_cli("forecast", f"--matrix={matrix}", f"--task_data={task_data}", "--model=x",
                   f"--output={tmp_path / 'f.jsonl'}") == 2
    assert "give one of --model" in capsys.readouterr().err
    assert run_cli("forecast", f"--matrix={matrix}", f"--model={tmp_path}", "--method=rep_sim",
                   f"--output={tmp_path / 'f.jsonl'}") == 1
    assert "give --task_data" in capsys.readouterr().err
