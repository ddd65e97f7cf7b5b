"""The base model's representations in the matrix file: equal to transformers' final hidden
states of the base model (mean over tokens, last token), cached by fingerprint and reused."""

import glob
import logging
import os

import numpy as np
import pytest

from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file
from forgetting_jax.experiment.choices import BINARY
from forgetting_jax.matrix.run import run_pipeline
from forgetting_jax.matrix.upstream import prepare_upstream
from forgetting_jax.matrix.representations import represented_examples
from micro_demo import TASKS, copy_workspace, micro_config, micro_experiment


def _transformers_states(model_dir, examples):
    """(mean over tokens [n, D], last token [n, D]) of transformers' final hidden states (fp32, one
    example at a time): an independent reference."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    means, lasts = [], []
    for ids, _ in (e.pair for e in examples):
        with torch.no_grad():
            out = model(input_ids=torch.as_tensor(ids[None], dtype=torch.long), output_hidden_states=True)
        hidden = out.hidden_states[-1][0].double().numpy()
        means.append(hidden.mean(0))
        lasts.append(hidden[-1])
    return np.array(means), np.array(lasts)


def test_representations_equal_transformers_on_the_base_model(micro_matrix):
    from forgetting_jax.train.finetune import plan_finetune

    workdir, summary = micro_matrix
    data = read_matrix_file(summary.matrix_path)
    config = micro_experiment()
    up = prepare_upstream(config, workdir)
    [model_dir] = glob.glob(os.path.join(workdir, "base", "*", "model"))
    mean, last = _transformers_states(model_dir, up.examples[:12])
    np.testing.assert_allclose(data["example_embeddings"][:12], mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(data["example_last_hidden"][:12], last, rtol=1e-4, atol=1e-4)
    assert data["example_embeddings"].shape == data["example_last_hidden"].shape == (50, 64)

    s = int(config.matrix.task_examples)
    i = list(TASKS).index("parity")
    chosen = represented_examples(plan_finetune(config, workdir, "parity", up.base).examples["train"], s)
    mean, last = _transformers_states(model_dir, chosen)
    count = int(data["task_example_count"][i])
    assert count == len(chosen) == s  # the task has more training examples than S
    np.testing.assert_allclose(data["task_embeddings"][i], mean.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(data["task_example_last_hidden"][i, :count], last, rtol=1e-4, atol=1e-4)


def test_representations_are_cached_and_follow_their_settings(micro_matrix, tmp_path, caplog):
    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    before = read_matrix_file(os.path.join(workdir, "matrix", "forgetting.npz"))
    with caplog.at_level(logging.INFO, logger="forgetting_jax.run"):
        summary = run_pipeline(micro_experiment(), workdir)
    assert not [r for r in caplog.records if "represented" in r.getMessage()]  # all reused
    again = read_matrix_file(summary.matrix_path)
    for key in ("example_embeddings", "task_example_last_hidden", "task_example_count"):
        np.testing.assert_array_equal(again[key], before[key])

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forgetting_jax.run"):
        summary = run_pipeline(micro_experiment(**{"matrix.task_examples": 8}), workdir, analyze=False)
    messages = [r.getMessage() for r in caplog.records if "represented" in r.getMessage()]
    assert len(messages) == len(TASKS) and all("represented 8 training examples" in m for m in messages)
    small = read_matrix_file(summary.matrix_path)
    assert small["task_example_last_hidden"].shape == (len(TASKS), 8, 64)
    np.testing.assert_array_equal(small["example_embeddings"], before["example_embeddings"])  # upstream reused

    summary = run_pipeline(micro_experiment(**{"matrix.representations": False}), workdir, analyze=False)
    assert "example_embeddings" not in np.load(summary.matrix_path).files


def test_matrix_file_checks_the_last_token_representations(tmp_path):
    m, n = 3, 5
    base = dict(Z=np.zeros((m, n), np.float32), tasks=np.array(["a", "b", "c"]),
                example_last_hidden=np.zeros((n, 4), np.float32),
                task_example_last_hidden=np.zeros((m, 2, 4), np.float32),
                task_example_count=np.array([1, 2, 2], np.int32))
    path = tmp_path / "m.npz"
    np.savez(path, **base)
    assert read_matrix_file(str(path))["task_example_count"].tolist() == [1, 2, 2]
    for change, message in [({"task_example_count": None}, "task_example_count missing"),
                            ({"task_example_count": np.array([1, 3, 0], np.int32)}, "must be in [0, 2]"),
                            ({"task_example_last_hidden": np.zeros((m, 2, 5), np.float32)}, "must be [3, S, 4]"),
                            ({"example_last_hidden": np.zeros((n + 1, 4), np.float32)}, "must be [5, D]")]:
        arrays = {k: v for k, v in {**base, **change}.items() if v is not None}
        np.savez(path, **arrays)
        with pytest.raises(MatrixFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_matrix_file(str(path))


def test_the_report_compares_the_forecasters(micro_matrix):
    """The report of `run` has the "Predicting forgetting" section: config.predict's protocol on
    the matrix just built, every configured method, the winner, and its JSON and figure."""
    import json

    workdir, summary = micro_matrix
    with open(summary.report_path, encoding="utf-8") as f:
        report = f.read()
    assert "## Predicting forgetting" in report and "Headline figures: **pooled**" in report
    analysis_dir = os.path.join(os.path.dirname(summary.report_path), "analysis")
    with open(os.path.join(analysis_dir, "prediction.json"), encoding="utf-8") as f:
        result = json.load(f)
    # every configured method but the binary ones (logistic, lgmf, ...), which need lost answers
    assert list(result["methods"]) == [m for m in micro_config().predict.methods if m not in BINARY]
    assert result["settings"]["seeds"] == 3 and result["settings"]["rep_dot"]["steps"] == 100
    best = result["best"]["rmse"]
    assert f"**{best}** predicts best by pooled RMSE" in report
    assert summary.analysis["prediction"]["best"] == result["best"]
    assert os.path.getsize(os.path.join(analysis_dir, "prediction.png")) > 1000
