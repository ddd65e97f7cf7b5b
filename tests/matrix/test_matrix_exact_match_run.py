"""`forgetting-jax run` with matrix.metric=exact_match on the micro demo: the binary matrix file,
answers that match transformers' greedy decoding of the exported base, reuse of every answer,
the report's section and `predict --methods=logistic` on the result; the matrix of only the
base's right answers (matrix.em_columns=base_correct) from the same answers."""

import glob
import os

import numpy as np
import pytest

from forgetting_jax.analysis.matrix_file import read_matrix_file
from forgetting_jax.matrix.run import run_pipeline
from micro_demo import micro_experiment

pytestmark = pytest.mark.slow  # the whole pipeline, trained

UPSTREAM_TASKS = ("palindrome", "code_lookup")
EXACT = {"matrix.metric": "exact_match", "matrix.upstream": "demo_tasks", "matrix.upstream_tasks": UPSTREAM_TASKS,
         "pretrain.demo_tasks": UPSTREAM_TASKS, "matrix.num_upstream": 40, "matrix.max_new_tokens": 6,
         "matrix.generate_batch_size": 16, "predict.methods": ("logistic", "knn", "train_mean"),
         "matrix.em_columns": "all"}  # the micro base answers none right


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("exact") / "W")
    return workdir, run_pipeline(micro_experiment(**EXACT), workdir)


def test_binary_matrix_file(exact):
    _, summary = exact
    data = read_matrix_file(summary.matrix_path)
    assert data["metric"] == "exact_match"
    m, n = len(summary.tasks), 40
    assert data["Z"].shape == data["drop"].shape == data["correct_after"].shape == (m, n)
    np.testing.assert_array_equal(data["drop"], data["correct_before"][None] & ~data["correct_after"])
    assert data["ft_nll"].shape == (m, n)  # the NLL rows are there too


def test_answers_are_judged_completions_of_the_exported_base(exact):
    import transformers

    from forgetting_jax.data.demo.tasks import suite_records
    from forgetting_jax.data.prompts import prompt_text
    from forgetting_jax.score.exact_match import correctness

    workdir, summary = exact
    [path] = glob.glob(os.path.join(workdir, "matrix", "answers", "_base", "*.npz"))
    stored = np.load(path)
    data = read_matrix_file(summary.matrix_path)
    records = {r["id"]: r for r in suite_records(UPSTREAM_TASKS)}
    chosen = [records[i] for i in data["example_ids"]]
    references = [r["messages"][-1]["content"] for r in chosen]
    np.testing.assert_array_equal(correctness("demo", list(stored["completions"]), references),
                                  data["correct_before"])
    [model_dir] = glob.glob(os.path.join(workdir, "base", "*", "model"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for j in range(0, 40, 8):
        ids = tokenizer(prompt_text(tokenizer, chosen[j]), add_special_tokens=False, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert str(stored["completions"][j]) == text.split("\n")[0] or text.startswith(str(stored["completions"][j]))


def test_second_run_reuses_every_answer(exact, monkeypatch):
    import forgetting_jax.matrix.answers as answers

    workdir, first = exact
    monkeypatch.setattr(answers, "answer", lambda *a, **k: pytest.fail("answered again"))
    summary = run_pipeline(micro_experiment(**EXACT), workdir, analyze=False)
    assert summary.trained == [] and sorted(summary.reused_rows) == sorted(first.tasks)


def test_report_and_logistic_prediction(exact):
    _, summary = exact
    with open(summary.report_path) as f:
        text = f.read()
    assert "## Answers lost (exact match)" in text and "answered right before" not in text
    assert os.path.isfile(os.path.join(summary.experiment_dir, "analysis", "answers.json"))


def test_no_right_answer_stops_before_fine_tuning_naming_the_setting(exact, monkeypatch):
    import forgetting_jax.matrix.rows as rows

    workdir, _ = exact
    data = read_matrix_file(exact[1].matrix_path)
    assert not data["correct_before"].any()  # what the micro base answers
    monkeypatch.setattr(rows, "finetune", lambda *a, **k: pytest.fail("fine-tuned"))
    with pytest.raises(ValueError, match="matrix.em_columns=base_correct: the base model answers 0 of the 40"):
        run_pipeline(micro_experiment(**dict(EXACT, **{"matrix.em_columns": "base_correct"})), workdir)


def test_base_correct_columns_cut_every_upstream_array(exact, monkeypatch, caplog):
    import forgetting_jax.matrix.answers as answers

    workdir, first = exact
    full = read_matrix_file(first.matrix_path)
    read = answers.AnswerStore.read
    right = np.zeros(40, bool)
    right[[1, 4, 9, 16, 25, 36]] = True

    def base_right_on_some(self, task, fp, n):  # the base's stored answers, six of them made right
        correct = read(self, task, fp, n)
        return correct | right if task == answers.BASE and correct is not None else correct

    monkeypatch.setattr(answers.AnswerStore, "read", base_right_on_some)
    monkeypatch.setattr(answers, "answer", lambda *a, **k: pytest.fail("answered again"))
    with caplog.at_level("INFO", logger="forgetting_jax.run"):
        summary = run_pipeline(micro_experiment(**dict(EXACT, **{"matrix.em_columns": "base_correct"})), workdir)
    assert "matrix.em_columns=base_correct: 6 of 40 upstream examples are columns" in caplog.text
    assert summary.num_columns == 6 and summary.experiment_dir != first.experiment_dir
    data = read_matrix_file(summary.matrix_path)
    kept = np.flatnonzero(right)
    assert list(data["columns"]) == list(kept) and data["upstream_size"] == 40 and data["em_columns"] == "base_correct"
    assert data["example_ids"] == [full["example_ids"][j] for j in kept]
    assert data["example_sources"] == [full["example_sources"][j] for j in kept]
    assert data["correct_before"].all() and data["tasks"] == full["tasks"]
    for key in ("ft_nll", "correct_after"):
        np.testing.assert_array_equal(data[key], full[key][:, kept])
    for key in ("base_nll", "example_embeddings", "example_last_hidden"):
        np.testing.assert_array_equal(data[key], full[key][kept])
    np.testing.assert_array_equal(data["task_embeddings"], full["task_embeddings"])
    np.testing.assert_array_equal(data["Z"], (~full["correct_after"][:, kept]).astype(np.float32))
    with open(summary.report_path) as f:
        assert "columns are those 6 examples only" in f.read()


def test_replay_measures_the_exact_match_drop_on_the_heldout_prompts(exact, monkeypatch):
    """`replay` on the exact-match workspace: every run also answers the held-out prompts, and
    results.json holds each strategy's drop (the base made right on every prompt, so the drop is the
    share of held-out prompts the run's model answers wrong)."""
    import forgetting_jax.matrix.answers as answers
    from forgetting_jax.replay.experiment import run_replay

    workdir, _ = exact
    read = answers.AnswerStore.read

    def base_right(self, task, fp, n):
        correct = read(self, task, fp, n)
        return np.ones(n, bool) if task == answers.BASE and correct is not None else correct

    monkeypatch.setattr(answers.AnswerStore, "read", base_right)
    config = micro_experiment(**dict(EXACT, **{"replay.strategies": ("none", "random"),
                                               "replay.test_tasks": ("divide",)}))
    results = run_replay(config, workdir)
    drop = results["exact_match"]["drop"]
    for strategy in ("none", "random"):
        value = drop[strategy]["divide"]
        assert 0.0 <= value <= 1.0
        assert results["exact_match"]["summary"][strategy]["mean"] == pytest.approx(value)
    [path] = glob.glob(os.path.join(workdir, "replay", "heldout", "answers", "divide.random", "*.npz"))
    stored = np.load(path)
    assert stored["correct"].shape == (15,)  # the held-out prompts only
    assert drop["random"]["divide"] == pytest.approx(float((~stored["correct"]).mean()))
    with open(os.path.join(workdir, "replay", "table.md")) as f:
        assert "Exact-match drop on the held-out prompts" in f.read()
