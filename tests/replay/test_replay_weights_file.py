"""replay.weights_file: a forecast file's replay weights read with errors that name the file and
line, mapped onto the upstream examples by id, and `forgetting-jax finetune` replaying by them."""

import json
import os

import numpy as np
import pytest

from command_line import keep_pytest_stderr, run_cli
from forgetting_jax.replay.sampler import ReplaySchedule
from forgetting_jax.replay.weights_file import WeightsFileError, read_weights, weight_logits, weights_path
from micro_demo import cli_overrides, copy_workspace


def setup_module():
    keep_pytest_stderr()


def write_lines(path, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_weights_are_read_by_id_and_unknown_or_disallowed_examples_are_never_drawn(tmp_path):
    path = write_lines(tmp_path / "f.jsonl", [{"id": "b", "predicted": 0.9, "rank": 1, "replay_weight": 0.75},
                                              {"id": "a", "predicted": 0.1, "rank": 2, "replay_weight": 0.25},
                                              {"id": "z", "rank": 3, "replay_weight": 0.0}])
    weights, content = read_weights(path)
    assert weights == {"b": 0.75, "a": 0.25, "z": 0.0} and len(content) == 16
    logits, _ = weight_logits(path, ["a", "b", "c", "z"])
    np.testing.assert_allclose(np.exp(logits), [0.25, 0.75, 0.0, 0.0])
    logits, _ = weight_logits(path, ["a", "b", "c"], allowed_N=np.array([True, False, True]))
    assert np.isfinite(logits).tolist() == [True, False, False]
    assert set(ReplaySchedule(logits, [0, 1]).take(np.arange(5)).tolist()) == {0}  # only "a" may be drawn
    write_lines(tmp_path / "g.jsonl", [{"id": "b", "replay_weight": 0.5}])
    assert read_weights(path)[1] != read_weights(str(tmp_path / "g.jsonl"))[1]  # the content's fingerprint
    assert weights_path("W/forecasts/{task}.jsonl", "add") == "W/forecasts/add.jsonl"


@pytest.mark.parametrize("lines, message", [
    ([{"id": "a", "replay_weight": 1.0}, "{not json"], r"f.jsonl:2: not a JSON object"),
    ([[1, 2]], r"f.jsonl:1: not a JSON object"),
    ([{"id": "a"}], r"f.jsonl:1: no field 'replay_weight'"),
    ([{"replay_weight": 1.0}], r"f.jsonl:1: no field 'id'"),
    ([{"id": "a", "replay_weight": -1}], r"f.jsonl:1: field 'replay_weight' must be a finite number >= 0"),
    ([{"id": "a", "replay_weight": "high"}], r"f.jsonl:1: field 'replay_weight' must be"),
    ([{"id": "a", "replay_weight": 1}, {"id": "a", "replay_weight": 1}], r"f.jsonl:2: id 'a' appears twice"),
    ([{"id": "a", "replay_weight": 0}], r"f.jsonl: every replay_weight is 0"),
    ([], r"f.jsonl: no lines"),
])
def test_a_bad_file_is_named_with_its_line(tmp_path, lines, message):
    path = write_lines(tmp_path / "f.jsonl", lines)
    with pytest.raises(WeightsFileError, match=message):
        read_weights(path)


def test_a_missing_file_and_a_file_of_other_examples_are_named(tmp_path):
    with pytest.raises(WeightsFileError, match=r"nope.jsonl.*no such file"):
        read_weights(str(tmp_path / "nope.jsonl"))
    path = write_lines(tmp_path / "f.jsonl", [{"id": "x", "replay_weight": 1.0}])
    with pytest.raises(WeightsFileError, match=r"f.jsonl: no upstream example that may be replayed has a weight "
                                               r"\(0 of the 2 upstream ids"):
        weight_logits(path, ["a", "b"])


@pytest.mark.slow
def test_finetune_replays_the_forecast_files_examples(micro_matrix, tmp_path, capsys):
    """`forgetting-jax finetune --config.replay.weights_file=...` on the micro workspace: a replay
    run (final protocol: floor(6 x 5/4) = 7 steps, the last kept) whose fingerprint holds the
    file's; a bad file stops it before training, naming the file."""
    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    ids = [str(i) for i in np.load(os.path.join(workdir, "matrix", "forgetting.npz"))["example_ids"]]
    os.makedirs(os.path.join(workdir, "forecasts"))
    write_lines(os.path.join(workdir, "forecasts", "divide.jsonl"),
                [{"id": e, "rank": r, "replay_weight": 0.2 if r <= 5 else 0.0} for r, e in enumerate(ids, start=1)])
    template = os.path.join(workdir, "forecasts", "{task}.jsonl")
    args = ["finetune", "--config=configs/demo.py", *cli_overrides(), f"--workdir={workdir}", "--task=divide",
            f"--config.replay.weights_file={template}"]
    assert run_cli(*args) == 0
    model_dir = capsys.readouterr().out.strip().splitlines()[-1]
    run_dir = os.path.dirname(model_dir)
    assert os.path.isfile(os.path.join(model_dir, "config.json"))
    with open(os.path.join(run_dir, "fingerprint.json")) as f:
        record = json.load(f)
    mixture = record["inputs"]["mixture"]
    assert mixture["strategy"] == "forecast" and mixture["protocol"] == "final" and mixture["ratio"] == "1/4"
    assert mixture["weights_file"] == read_weights(os.path.join(workdir, "forecasts", "divide.jsonl"))[1]
    assert record["steps"] == 7 and record["inputs"]["train"]["result"] == "last"

    assert run_cli(*args[:-2], "--task=to_hex", f"--config.replay.weights_file={template}") == 1
    assert "forecasts/to_hex.jsonl" in capsys.readouterr().err
