"""The matrix store reuses only what matches its fingerprint and assembles the contract's file."""

import os

import numpy as np

from forgetting_jax.matrix.store import MatrixStore, task_filename, upstream_tokens_fingerprint


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


def test_upstream_tokens_fingerprint_sees_tokens_and_ids():
    a = upstream_tokens_fingerprint(["x", "y"], [np.array([1, 2]), np.array([3])])
    assert a == upstream_tokens_fingerprint(["x", "y"], [np.array([1, 2]), np.array([3])])
    assert a != upstream_tokens_fingerprint(["x", "y"], [np.array([1, 2]), np.array([4])])
    assert a != upstream_tokens_fingerprint(["x", "z"], [np.array([1, 2]), np.array([3])])


def test_rows_of_two_fingerprints_live_side_by_side(tmp_path):
    store = MatrixStore(str(tmp_path / "matrix"))
    store.write_row("t", "fp-a", np.array([1.0, 2.0]))
    store.write_row("t", "fp-b", np.array([3.0, 4.0]))
    np.testing.assert_array_equal(store.row("t", "fp-a", 2), [1.0, 2.0])
    np.testing.assert_array_equal(store.row("t", "fp-b", 2), [3.0, 4.0])
    store.write_base("base-a", ["x"], np.array([1.0]), np.array([2]))
    store.write_base("base-b", ["x"], np.array([5.0]), np.array([2]))
    assert store.base("base-a")["nll"][0] == 1.0 and store.base("base-b")["nll"][0] == 5.0


def test_files_of_the_earlier_layout_are_read_and_copied(tmp_path):
    store = MatrixStore(str(tmp_path / "matrix"))
    os.makedirs(store.rows_dir)
    np.savez(store.legacy_row_path("a/b"), task=np.asarray("a/b"), ft_nll=np.array([1.0, 2.0], np.float32),
             fingerprint=np.asarray("fp-row"))
    np.savez(store.legacy_base_path, example_id=np.array(["x", "y"]), nll=np.array([1.0, 2.0], np.float32),
             num_tokens=np.array([3, 4], np.int32), fingerprint=np.asarray("fp-base"))
    assert store.row("a/b", "other", 2) is None and store.base("other") is None  # another fingerprint: absent
    np.testing.assert_array_equal(store.row("a/b", "fp-row", 2), [1.0, 2.0])
    np.testing.assert_array_equal(store.base("fp-base", 2)["nll"], [1.0, 2.0])
    assert os.path.isfile(store.row_path("a/b", "fp-row")) and os.path.isfile(store.base_path("fp-base"))
    os.remove(store.legacy_row_path("a/b"))
    os.remove(store.legacy_base_path)
    np.testing.assert_array_equal(store.row("a/b", "fp-row", 2), [1.0, 2.0])  # read from its new place
    np.testing.assert_array_equal(store.base("fp-base", 2)["nll"], [1.0, 2.0])


def _damaged_copies(directory, name):
    return [n for n in os.listdir(directory) if n.startswith(name + ".damaged-")]


def test_store_moves_aside_garbage_and_wrong_dtypes(tmp_path, warnings_of_package):
    from forgetting_jax.matrix.store import MatrixStore

    store = MatrixStore(str(tmp_path / "matrix"))
    store.write_row("t", "fp", np.array([1.0, 2.0]))
    path = store.row_path("t", "fp")
    with open(path, "wb") as f:
        f.write(b"not a zip file")
    assert store.row("t", "fp", 2) is None and not os.path.exists(path)
    np.savez(path, task=np.asarray("t"), ft_nll=np.array(["a", "b"]), fingerprint=np.asarray("fp"))
    assert store.row("t", "fp", 2) is None
    assert len(_damaged_copies(os.path.dirname(path), "fp.npz")) == 2
    store.write_row("t", "fp", np.array([1.0, 2.0]))
    assert store.row("t", "other-fp", 2) is None and os.path.exists(path)  # another experiment's: not damaged
    assert store.row("t", "fp", 3) is None  # wrong length
    legacy = store.legacy_row_path("t")  # the earlier layout's file is checked the same way
    with open(legacy, "wb") as f:
        f.write(b"not a zip file")
    assert store.row("t", "fp2", 2) is None and not os.path.exists(legacy)
    assert len(_damaged_copies(store.rows_dir, "t.npz")) == 1
    assert sum("damaged" in m for m in warnings_of_package) == 4, warnings_of_package
