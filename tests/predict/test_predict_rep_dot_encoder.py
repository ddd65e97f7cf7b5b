"""rep_dot with a trainable encoder on the micro demo's workspace: `forgetting-jax predict
--rep_dot_encoder=full | top:1` trains it as a driver run (resumable, reused when finished),
--train_tasks restricts the training rows, and the errors name what is missing."""

import json
import os

import pytest

from command_line import keep_pytest_stderr, run_cli
from micro_demo import cli_overrides


def setup_module():
    keep_pytest_stderr()


class _Moved:
    """A RunSummary's matrix path in a copy of its workspace."""

    def __init__(self, summary, source, copy):
        self.matrix_path = os.path.join(copy, os.path.relpath(summary.matrix_path, source))


def _predict(workdir, summary, out, *extra):
    return run_cli("predict", f"--matrix={summary.matrix_path}", f"--output={out}", f"--workdir={workdir}",
                   "--config=configs/demo.py", *cli_overrides(), "--test_tasks=parity", "--k=5", "--seeds=2",
                   "--rep_dot_steps=4", "--rep_dot_eval_every=2", "--rep_dot_batch=2", *extra)


@pytest.mark.parametrize("encoder", ["full"])  # top:1: the report's test below
def test_trainable_encoder_runs_and_is_reused(micro_matrix, tmp_path, encoder):
    from micro_demo import copy_workspace

    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))  # the run writes W/predict/
    summary = _Moved(micro_matrix[1], micro_matrix[0], workdir)
    out = tmp_path / "r.json"
    assert _predict(workdir, summary, out, "--methods=rep_dot,train_mean", f"--rep_dot_encoder={encoder}") == 0
    result = json.loads(out.read_text())
    assert result["settings"]["rep_dot"]["encoder"] == encoder
    rmse = result["methods"]["rep_dot"]["pooled"]["rmse"]
    assert rmse == rmse and rmse < 10  # a finite forecast
    runs = os.path.join(workdir, "predict", "rep_dot")
    done = [d for d in os.listdir(runs) if os.path.isfile(os.path.join(runs, d, "result.npz"))]
    assert done, "the finished run keeps its result"
    metrics = [json.loads(line) for d in done for line in open(os.path.join(runs, d, "metrics.jsonl"))]
    assert any("val_loss" in m for m in metrics) and any("loss" in m for m in metrics)
    before = {d: os.path.getmtime(os.path.join(runs, d, "result.npz")) for d in done}
    out2 = tmp_path / "r2.json"
    assert _predict(workdir, summary, out2, "--methods=rep_dot", f"--rep_dot_encoder={encoder}") == 0
    assert json.loads(out2.read_text())["methods"]["rep_dot"]["pooled"] == result["methods"]["rep_dot"]["pooled"]
    assert {d: os.path.getmtime(os.path.join(runs, d, "result.npz")) for d in done} == before  # reused


def test_train_tasks_restrict_the_rows(micro_matrix, tmp_path):
    workdir, summary = micro_matrix
    out = tmp_path / "r.json"
    code = run_cli("predict", f"--matrix={summary.matrix_path}", f"--output={out}", "--test_tasks=parity",
                   "--train_tasks=add", "--k=5", "--seeds=2", "--methods=additive,train_mean")
    assert code == 0
    result = json.loads(out.read_text())
    assert result["train_tasks"] == ["add"] and result["test_tasks"] == ["parity"]
    assert run_cli("predict", f"--matrix={summary.matrix_path}", f"--output={out}", "--test_tasks=parity",
                   "--train_tasks=parity", "--methods=additive") == 2


def test_trainable_encoder_needs_the_workspace(micro_matrix, tmp_path, capsys):
    _, summary = micro_matrix
    code = run_cli("predict", f"--matrix={summary.matrix_path}", f"--output={tmp_path / 'r.json'}",
                   "--test_tasks=parity", "--methods=rep_dot", "--rep_dot_encoder=full")
    assert code == 2
    assert "--workdir and --config" in capsys.readouterr().err
    code = run_cli("predict", f"--matrix={summary.matrix_path}", f"--output={tmp_path / 'r.json'}",
                   "--test_tasks=parity", "--rep_dot_encoder=half")
    assert code == 2 and "not one of frozen, full, top:K" in capsys.readouterr().err


def test_run_trains_the_encoder_for_its_report(micro_matrix, tmp_path):
    from forgetting_jax.matrix.run import run_pipeline
    from micro_demo import copy_workspace, micro_experiment

    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    config = micro_experiment(**{"predict.rep_dot_encoder": "top:1", "predict.rep_dot_steps": 4,
                                 "predict.rep_dot_eval_every": 2, "predict.rep_dot_batch": 2,
                                 "predict.methods": ("additive", "rep_dot", "train_mean"),
                                 "predict.test_tasks": ("parity",), "predict.seeds": 2})
    summary = run_pipeline(config, workdir)
    report = open(summary.report_path, encoding="utf-8").read()
    assert "of an encoder trained with its head, top:1, 4 steps" in report
    assert "| rep_dot |" in report and "named in predict.test_tasks" in report
    assert os.listdir(os.path.join(workdir, "predict", "rep_dot"))


def test_encoder_inputs_of_another_model_and_bad_input(micro_matrix, tmp_path, capsys):
    from forgetting_jax.analysis.matrix_file import read_matrix_file
    from forgetting_jax.matrix.encoder_inputs import encoder_inputs
    from forgetting_jax.train.base import base_model
    from micro_demo import micro_experiment

    workdir, summary = micro_matrix
    config = micro_experiment()
    data = read_matrix_file(summary.matrix_path)
    base = encoder_inputs(config, workdir, data["tasks"], data["example_ids"])
    other = encoder_inputs(config, workdir, data["tasks"], data["example_ids"],
                           base_model(config, workdir).model_dir)
    assert other.model_fingerprint != base.model_fingerprint
    assert other.data_fingerprint == base.data_fingerprint  # the same tokenizer: the same sequences
    assert len(base.upstream) == len(data["example_ids"]) and len(base.task_examples) == len(data["tasks"])
    with pytest.raises(ValueError, match="not upstream examples"):
        encoder_inputs(config, workdir, data["tasks"], ["nope"] + data["example_ids"][1:])
    with pytest.raises(ValueError, match="no such model directory"):
        encoder_inputs(config, workdir, data["tasks"], data["example_ids"], str(tmp_path / "missing"))
    code = _predict(workdir, summary, tmp_path / "r.json", "--methods=rep_dot", "--rep_dot_encoder=top:2")
    assert code == 2 and "has 1 layer(s)" in capsys.readouterr().err
