"""Exact-match matrices: the arrays of the matrix file, their checks, the report's statistics."""

import numpy as np
import pytest

from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file
from forgetting_jax.matrix.answers import answer_arrays, kept_columns
from forgetting_jax.matrix.answers_report import answer_statistics, answers_section, row_shuffled, svd_r2
from forgetting_jax.matrix.store import MatrixStore


def _file(tmp_path, before, after, **changes):
    arrays = answer_arrays(np.asarray(before, bool), {f"t{i}": np.asarray(r, bool) for i, r in enumerate(after)},
                           [f"t{i}" for i in range(len(after))])
    arrays.update(tasks=np.asarray([f"t{i}" for i in range(len(after))]),
                  example_ids=np.asarray([f"e{j}" for j in range(len(before))]))
    arrays.update(changes)
    path = str(tmp_path / "m.npz")
    np.savez(path, **arrays)
    return path


BEFORE = [1, 1, 0, 1, 0]
AFTER = [[1, 0, 1, 0, 0],   # loses e1 and e3, gains e2
         [0, 1, 0, 1, 0],   # loses e0
         [1, 1, 0, 0, 0]]   # loses e3


def test_drop_is_right_before_and_wrong_after(tmp_path):
    data = read_matrix_file(_file(tmp_path, BEFORE, AFTER))
    assert data["metric"] == "exact_match"
    expected = np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0]], np.uint8)
    np.testing.assert_array_equal(data["drop"], expected)
    np.testing.assert_array_equal(data["Z"], expected.astype(np.float32))


def test_inconsistent_files_are_rejected_naming_the_field(tmp_path):
    bad_drop = np.zeros((3, 5), np.uint8)
    with pytest.raises(MatrixFileError, match="'drop'"):
        read_matrix_file(_file(tmp_path, BEFORE, AFTER, drop=bad_drop, Z=bad_drop.astype(np.float32)))
    with pytest.raises(MatrixFileError, match="'Z'"):
        read_matrix_file(_file(tmp_path, BEFORE, AFTER, Z=np.ones((3, 5), np.float32)))
    path = _file(tmp_path, BEFORE, AFTER)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "correct_after"}
    np.savez(path, **arrays)
    with pytest.raises(MatrixFileError, match="correct_after"):
        read_matrix_file(path)
    with pytest.raises(MatrixFileError, match="metric"):
        read_matrix_file(_file(tmp_path, BEFORE, AFTER, metric=np.asarray("accuracy")))


def test_nll_files_read_as_nll(tmp_path):
    path = str(tmp_path / "z.npz")
    np.savez(path, Z=np.zeros((2, 3), np.float32), tasks=np.asarray(["a", "b"]))
    assert read_matrix_file(path)["metric"] == "nll"


def test_statistics_by_hand(tmp_path, tmp_path_factory):
    data = read_matrix_file(_file(tmp_path, BEFORE, AFTER))
    stats = answer_statistics(data)
    assert stats["base_right"] == 3 and stats["base_accuracy"] == pytest.approx(0.6)
    per_task = {r["task"]: r for r in stats["per_task"]}
    assert [per_task[t]["drops"] for t in ("t0", "t1", "t2")] == [2, 1, 1]
    assert per_task["t0"]["gains"] == 1 and per_task["t0"]["drop_rate"] == pytest.approx(2 / 3)
    assert per_task["t1"]["accuracy"] == pytest.approx(0.4)
    assert stats["drop_rate"] == pytest.approx(4 / 9)
    # right-before examples e0, e1, e3 are lost by 1, 1 and 2 of the 3 tasks
    assert stats["per_example_drop_rates"] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert stats["most_dropped"][0] == {"example": "e3", "drop_rate": pytest.approx(2 / 3)}
    assert stats["examples_never_dropped"] == 0 and stats["examples_dropped_by_all"] == 0
    text = answers_section(data, str(tmp_path_factory.mktemp("analysis")), "analysis")
    assert "Answers lost" in text and "60.0%" in text


def test_low_rank_null_keeps_row_counts_and_loses_structure():
    rng = np.random.default_rng(0)
    u, v = rng.random(40) < 0.5, rng.random(300) < 0.3
    d = (u[:, None] & v[None, :]).astype(float)  # rank one: the same examples lost by every losing task
    shuffled = row_shuffled(d, rng)
    np.testing.assert_array_equal(shuffled.sum(axis=1), d.sum(axis=1))
    assert svd_r2(d)[1] == pytest.approx(1.0, abs=1e-4)
    assert svd_r2(shuffled)[1] < 0.7


def _assembled(tmp_path, em_columns):
    """The matrix file of BEFORE / AFTER as `run` assembles it (NLL rows, representations, answers)."""
    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(len(AFTER))]
    n = len(BEFORE)
    before = np.asarray(BEFORE, bool)
    rows = {t: rng.random(n).astype(np.float32) for t in tasks}
    extras = {"example_embeddings": rng.random((n, 4)).astype(np.float32),
              "example_last_hidden": rng.random((n, 4)).astype(np.float32),
              "task_embeddings": rng.random((3, 4)).astype(np.float32),
              "task_example_last_hidden": rng.random((3, 2, 4)).astype(np.float32),
              "task_example_count": np.asarray([2, 1, 2], np.int32),
              **answer_arrays(before, {t: np.asarray(r, bool) for t, r in zip(tasks, AFTER)}, tasks, em_columns)}
    path = MatrixStore(str(tmp_path / em_columns)).assemble(
        rows, rng.random(n).astype(np.float32), [f"e{j}" for j in range(n)], [f"s{j}" for j in range(n)],
        extras=extras, columns=kept_columns(before, em_columns))
    with np.load(path) as npz:
        return read_matrix_file(path), {k: npz[k] for k in npz.files}, extras, rows


def test_base_correct_keeps_the_columns_the_base_answers_right(tmp_path):
    data, raw, extras, rows = _assembled(tmp_path, "base_correct")
    kept = [0, 1, 3]  # BEFORE's right answers
    assert raw["columns"].dtype == np.int64 and list(data["columns"]) == kept and data["upstream_size"] == 5
    assert str(raw["em_columns"]) == data["em_columns"] == "base_correct"
    assert data["example_ids"] == ["e0", "e1", "e3"] and data["example_sources"] == ["s0", "s1", "s3"]
    assert data["correct_before"].all()
    for key in ("example_embeddings", "example_last_hidden"):
        np.testing.assert_array_equal(data[key], extras[key][kept])
    for key in ("task_embeddings", "task_example_last_hidden", "task_example_count"):
        np.testing.assert_array_equal(data[key], extras[key])
    for key in ("correct_after", "drop"):
        np.testing.assert_array_equal(data[key], extras[key][:, kept])
    np.testing.assert_array_equal(data["ft_nll"], np.stack(list(rows.values()))[:, kept])
    np.testing.assert_array_equal(data["Z"], extras["drop"][:, kept].astype(np.float32))
    stats = answer_statistics(data)
    assert stats["examples"] == 5 and stats["columns"] == 3 and stats["base_accuracy"] == pytest.approx(0.6)
    assert stats["drop_rate"] == pytest.approx(4 / 9) and stats["per_task"][0]["gains"] is None
    text = answers_section(data, str(tmp_path), "analysis")
    assert "60.0%" in text and "em_columns=base_correct" in text and "answers gained" not in text


def test_all_keeps_every_column(tmp_path):
    data, raw, extras, _ = _assembled(tmp_path, "all")
    assert list(raw["columns"]) == [0, 1, 2, 3, 4] and data["em_columns"] == "all" and data["upstream_size"] == 5
    np.testing.assert_array_equal(data["Z"], extras["Z"])
    assert data["example_ids"] == [f"e{j}" for j in range(5)]
    assert "answers gained" in answers_section(data, str(tmp_path), "analysis")


def test_too_few_right_answers_name_the_setting():
    with pytest.raises(ValueError, match="matrix.em_columns"):
        kept_columns(np.zeros(5, bool), "base_correct")
    with pytest.raises(ValueError, match="matrix.em_columns"):
        kept_columns(np.eye(1, 5, 2, dtype=bool)[0], "base_correct")
    assert list(kept_columns(np.zeros(5, bool), "all")) == [0, 1, 2, 3, 4]


def test_inconsistent_columns_are_rejected_naming_the_field(tmp_path):
    _, raw, _, _ = _assembled(tmp_path, "base_correct")
    path = str(tmp_path / "bad.npz")
    for changes, field in (({"columns": np.asarray([0, 3, 1])}, "'columns'"),
                           ({"columns": np.asarray([0, 1])}, "'columns'"),
                           ({"upstream_size": np.asarray(2)}, "'upstream_size'"),
                           ({"em_columns": np.asarray("all")}, "'em_columns'"),
                           ({"correct_before": np.asarray([True, False, True]), "drop": raw["drop"] * 0,
                             "correct_after": raw["correct_after"] | True, "Z": raw["Z"] * 0}, "'em_columns'")):
        np.savez(path, **dict(raw, **changes))
        with pytest.raises(MatrixFileError, match=field):
            read_matrix_file(path)
    store = MatrixStore(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="'extra'"):
        store.assemble({"a": np.zeros(2), "b": np.ones(2)}, np.zeros(2), ["x", "y"], ["s", "s"],
                       extras={"extra": np.zeros(2)}, columns=np.asarray([1]))


def test_the_default_budget_is_the_papers_where_the_model_has_room(caplog):
    import dataclasses

    from forgetting_jax.data.demo.corpus import load_demo_tokenizer
    from forgetting_jax.data.demo.tasks import suite_records
    from forgetting_jax.experiment import MatrixSettings
    from forgetting_jax.matrix.answers import answer_set

    tokenizer = load_demo_tokenizer()
    records = suite_records(("palindrome",), "train")[:8]
    matrix = MatrixSettings(upstream="demo_tasks", upstream_tasks=("palindrome",), metric="exact_match")
    with caplog.at_level("INFO", logger="forgetting_jax.run"):
        default = answer_set(matrix, tokenizer, records, 4096)
    assert default.max_new_tokens == 512 and "up to 512 new tokens (the paper's budget)" in caplog.text
    longest = max(len(ids) for ids in default.prompt_ids)
    assert answer_set(matrix, tokenizer, records, longest + 100).max_new_tokens == 100
    explicit = answer_set(dataclasses.replace(matrix, max_new_tokens=6), tokenizer, records, 4096)
    assert explicit.max_new_tokens == 6 and explicit.fingerprint != default.fingerprint
