"""Exact-match matrices: the arrays of the matrix file, their checks, the report's statistics."""

import numpy as np
import pytest

from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file
from forgetting_jax.matrix.answers import answer_arrays
from forgetting_jax.matrix.answers_report import answer_statistics, answers_section, row_shuffled, svd_r2


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
