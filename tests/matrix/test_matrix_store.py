"""The matrix store reuses only what matches its fingerprint and assembles the contract's file."""

import numpy as np

from forgetting_jax.matrix.store import MatrixStore, task_filename, upstream_fingerprint


def test_rows_and_base_round_trip_by_fingerprint(tmp_path):
    store = MatrixStore(str(tmp_path / "matrix"))
    ids = ["a", "b", "c"]
    store.write_base("fp-base", ids, np.array([1.0, 2.0, 3.0]), np.array([4, 5, 6]))
    assert store.base("other") is None
    base = store.base("fp-base")
    np.testing.assert_array_equal(base["nll"], [1.0, 2.0, 3.0])
    store.write_row("flan/anli r1", "fp-row", np.array([1.5, 2.0, 2.5]))
    assert store.row("flan/anli r1", "stale") is None
    assert store.row("missing", "fp-row") is None
    np.testing.assert_array_equal(store.row("flan/anli r1", "fp-row"), [1.5, 2.0, 2.5])


def test_assemble_writes_design_contract(tmp_path):
    store = MatrixStore(str(tmp_path / "matrix"))
    rows = {"t2": np.array([2.0, 2.0]), "t1": np.array([0.5, 3.0])}
    path = store.assemble(rows, np.array([1.0, 2.0]), ["x", "y"], ["src1", "src2"])
    data = np.load(path)
    assert set(data.files) >= {"Z", "ft_nll", "base_nll", "tasks", "example_ids", "example_sources"}
    assert list(data["tasks"]) == ["t2", "t1"]
    np.testing.assert_allclose(data["Z"], [[1.0, 0.0], [-0.5, 1.0]])
    assert data["Z"].dtype == np.float32


def test_task_filenames_are_safe_and_distinct():
    names = ["a/b", "a_b", "plain", "..", "x y"]
    files = [task_filename(n) for n in names]
    assert len(set(files)) == len(files)
    assert all("/" not in f and " " not in f and not f.startswith(".") for f in files)
    assert task_filename("plain") == "plain"


def test_upstream_fingerprint_sees_tokens_and_ids():
    a = upstream_fingerprint(["x", "y"], [np.array([1, 2]), np.array([3])])
    assert a == upstream_fingerprint(["x", "y"], [np.array([1, 2]), np.array([3])])
    assert a != upstream_fingerprint(["x", "y"], [np.array([1, 2]), np.array([4])])
    assert a != upstream_fingerprint(["x", "z"], [np.array([1, 2]), np.array([3])])
