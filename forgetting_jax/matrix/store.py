"""The forgetting-matrix store: base scores, one file per finished row, the assembled matrix.

Layout under `root` (normally W/matrix), every file keyed by the fingerprint of what produced it,
so experiments sharing a workspace never overwrite each other's files:
  base_nll/<fp>.npz     example_id [N], nll [N], num_tokens [N], fingerprint: the base model's
                        scores of the upstream examples, computed once and reused.
  rows/<task>/<fp>.npz  task, ft_nll [N], fingerprint: one finished row (<task> is
                        `task_filename(task)`), written as soon as its task is scored (a killed
                        run loses at most the row in progress).
  forgetting.npz        Z [M, N] = ft_nll - base_nll, ft_nll [M, N], base_nll [N], tasks [M],
                        example_ids [N], example_sources [N]: the finished rows, in task order
                        (`assemble`; the pipeline writes each experiment's own copy elsewhere),
                        and the base model's representations (matrix/representations.py). With
                        `columns` (an exact-match matrix, matrix/answers.py kept_columns) only
                        those K upstream examples are columns: every array with an upstream
                        axis (COLUMN_AXES) is cut to them, and the file records columns [K]
                        int64 (their indices in the N) and upstream_size (N).

Files of the earlier layout (`base_nll.npz`, `rows/<task>.npz`, keyed by name alone) are still
read when their fingerprint is the one asked for, and copied to their fingerprint's place.
Every file is written atomically; a file whose fingerprint differs from the one asked for is
treated as absent. A damaged file (truncated, unreadable, missing arrays, wrong shapes or dtypes)
is moved aside to `<name>.damaged-<timestamp>` with a warning and treated as absent, so it is
recomputed. Only process 0 writes (and moves damaged files aside).
"""

import hashlib
import logging
import os
from typing import Sequence

import numpy as np

from forgetting_jax.utils.fingerprint import task_filename  # noqa: F401 (re-exported)
from forgetting_jax.utils.io import move_aside, write_npz
from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.matrix")

# What each file must hold: {array: (dtype kinds, ndim)}; "n" in a shape check is the upstream size.
BASE_ARRAYS = {"example_id": ("U", 1), "nll": ("f", 1), "num_tokens": ("iu", 1)}
ROW_ARRAYS = {"task": ("U", 0), "ft_nll": ("f", 1)}
# The upstream (column) axis of each array of the matrix file, and the arrays that have none.
COLUMN_AXES = {"Z": 1, "ft_nll": 1, "base_nll": 0, "example_ids": 0, "example_sources": 0, "example_embeddings": 0,
               "example_last_hidden": 0, "correct_before": 0, "correct_after": 1, "drop": 1}
NO_COLUMN_AXIS = ("tasks", "metric", "em_columns", "task_embeddings", "task_example_last_hidden",
                  "task_example_count")
COLUMN_AXES["example_text_embeddings"] = 0  # matrix/text_embeddings.py (matrix.embedder)
NO_COLUMN_AXIS += ("task_text_embeddings",)
COLUMN_AXES["example_gradients"] = 0  # matrix/gradients.py (matrix.gradient_dim)
COLUMN_AXES["example_texts"] = 0  # matrix/example_texts.py
NO_COLUMN_AXIS += ("task_gradients",)
NO_COLUMN_AXIS += ("upstream_settings", "base_fingerprint", "base_model_dir", "tokenizer_fingerprint",
                   "scoring_dtype")  # matrix/provenance.py


def select_columns(arrays: dict[str, np.ndarray], columns: np.ndarray) -> dict[str, np.ndarray]:
    """The matrix file's `arrays` (N upstream columns) cut to `columns` (int indices [K]) along
    each one's upstream axis (COLUMN_AXES); `columns` [K] int64 and `upstream_size` (N) added.
    ValueError for an array of unknown layout (it could not be cut consistently)."""
    n = int(arrays["Z"].shape[1])
    columns = np.asarray(columns, np.int64)
    if columns.ndim != 1 or (columns.size and (columns.min() < 0 or columns.max() >= n)) or (
            np.diff(columns) <= 0).any():
        raise ValueError(f"columns must be increasing indices into the {n} upstream examples, got {columns}")
    out = {}
    for name, value in arrays.items():
        if name in COLUMN_AXES:
            axis = COLUMN_AXES[name]
            if value.shape[axis] != n:
                raise ValueError(f"array {name!r} has {value.shape[axis]} upstream entries, 'Z' {n}")
            out[name] = np.take(value, columns, axis=axis)
        elif name in NO_COLUMN_AXIS:
            out[name] = value
        else:
            raise ValueError(f"array {name!r} of the matrix file has no known upstream axis (matrix/store.py "
                             "COLUMN_AXES): its columns cannot be chosen")
    return dict(out, columns=columns, upstream_size=np.asarray(n, np.int64))


def upstream_tokens_fingerprint(example_ids: Sequence[str], token_ids: Sequence[np.ndarray]) -> str:
    """Fingerprint of the upstream set: its ids and every token, in order."""
    digest = hashlib.sha256()
    for example_id, ids in zip(example_ids, token_ids, strict=True):
        digest.update(example_id.encode("utf-8") + b"\0")
        digest.update(np.asarray(ids, np.int32).tobytes() + b"\1")
    return digest.hexdigest()[:16]


def _problem(data: dict, arrays: dict, n: int | None) -> str | None:
    """Why `data` (a file's arrays) is not a well-formed file with `arrays`, or None."""
    for name, (kinds, ndim) in arrays.items():
        if name not in data:
            return f"no array {name!r}"
        value = data[name]
        if value.dtype.kind not in kinds or value.ndim != ndim:
            return f"array {name!r} has dtype {value.dtype} and shape {value.shape}"
        if n is not None and ndim >= 1 and value.shape[-1] != n:
            return f"array {name!r} has {value.shape[-1]} entries, expected {n}"
    return None


def read_checked(path: str, expected_fingerprint: str | None, arrays: dict, n: int | None = None) -> dict | None:
    """The arrays of the .npz at `path` when it is well formed and (unless `expected_fingerprint`
    is None) carries that fingerprint; None when absent or of another fingerprint. A damaged file
    is moved aside (process 0; see `move_aside`) and reads as absent."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}  # reads every member: a truncated one fails here
    except Exception as err:  # BadZipFile, EOFError, OSError, ValueError, zlib.error, ...
        _damaged(path, f"cannot be read: {type(err).__name__}: {err}")
        return None
    if expected_fingerprint is not None:
        if "fingerprint" not in data or data["fingerprint"].dtype.kind != "U" or data["fingerprint"].ndim:
            _damaged(path, "no fingerprint")
            return None
        if str(data["fingerprint"]) != expected_fingerprint:
            return None  # another experiment's file: absent, not damaged
    problem = _problem(data, arrays, n)
    if problem is not None:
        _damaged(path, problem)
        return None
    return data


def _damaged(path: str, reason: str) -> None:
    if is_main():
        move_aside(path, reason, log)
    else:
        log.warning("%s is damaged (%s); process 0 moves it aside and recomputes it", path, reason)


class MatrixStore:
    """Reads and writes the files of one forgetting matrix (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.base_dir = os.path.join(root, "base_nll")
        self.legacy_base_path = os.path.join(root, "base_nll.npz")
        self.rows_dir = os.path.join(root, "rows")
        self.matrix_path = os.path.join(root, "forgetting.npz")

    def base_path(self, fp: str) -> str:
        """base_nll/<fp>.npz: the base scores of fingerprint `fp`."""
        return os.path.join(self.base_dir, fp + ".npz")

    def row_path(self, task: str, fp: str) -> str:
        """rows/<task_filename(task)>/<fp>.npz: the row of `task` of fingerprint `fp`."""
        return os.path.join(self.rows_dir, task_filename(task), fp + ".npz")

    def legacy_row_path(self, task: str) -> str:
        """rows/<task_filename(task)>.npz: where the earlier layout kept the row of `task`."""
        return os.path.join(self.rows_dir, task_filename(task) + ".npz")

    def base(self, fp: str, n: int | None = None) -> dict | None:
        """{'example_id', 'nll', 'num_tokens'} when base scores of fingerprint `fp` are stored
        (with `n` entries, when given); a damaged file is moved aside and reads as absent. A
        matching file of the earlier layout is copied to `base_path(fp)`."""
        data = read_checked(self.base_path(fp), fp, BASE_ARRAYS, n)
        if data is None:
            data = read_checked(self.legacy_base_path, fp, BASE_ARRAYS, n)
            if data is not None:
                self._adopt(self.legacy_base_path, self.base_path(fp), data)
        return data

    def write_base(self, fp: str, example_ids: Sequence[str], nll: np.ndarray, num_tokens: np.ndarray) -> None:
        """Writes base scores example_id [N], nll [N], num_tokens [N] under fingerprint `fp`."""
        if is_main():
            write_npz(self.base_path(fp), example_id=np.asarray(example_ids, dtype=str),
                      nll=np.asarray(nll, np.float32), num_tokens=np.asarray(num_tokens, np.int32),
                      fingerprint=np.asarray(fp))

    def row(self, task: str, fp: str, n: int | None = None) -> np.ndarray | None:
        """The finished row's ft_nll [N] when one of fingerprint `fp` is stored (with `n` entries,
        when given), else None; a damaged file is moved aside and reads as absent. A matching row
        of the earlier layout is copied to `row_path(task, fp)`."""
        data = self._read_row(self.row_path(task, fp), task, fp, n)
        if data is None:
            legacy = self.legacy_row_path(task)
            data = self._read_row(legacy, task, fp, n)
            if data is not None:
                self._adopt(legacy, self.row_path(task, fp), data)
        return None if data is None else data["ft_nll"]

    @staticmethod
    def _read_row(path: str, task: str, fp: str, n: int | None) -> dict | None:
        data = read_checked(path, fp, ROW_ARRAYS, n)
        return data if data is not None and str(data["task"]) == task else None

    def _adopt(self, old_path: str, new_path: str, data: dict) -> None:
        """Copies a file of the earlier layout (its arrays `data`) to its fingerprint's place; the
        old file stays (other processes may be reading it) and is never written again."""
        if is_main():
            write_npz(new_path, **data)
            log.info("%s (earlier layout) copied to %s", old_path, new_path)

    def write_row(self, task: str, fp: str, ft_nll: np.ndarray) -> None:
        """Writes the row ft_nll [N] of `task` under fingerprint `fp`."""
        if is_main():
            write_npz(self.row_path(task, fp), task=np.asarray(task), ft_nll=np.asarray(ft_nll, np.float32),
                      fingerprint=np.asarray(fp))

    def assemble(self, rows: dict[str, np.ndarray], base_nll: np.ndarray, example_ids: Sequence[str],
                 example_sources: Sequence[str], path: str | None = None,
                 extras: dict[str, np.ndarray] | None = None, columns: np.ndarray | None = None) -> str:
        """Writes the matrix of finished rows {task: ft_nll [N]} (in the dict's order) to `path`
        (default: forgetting.npz under the root), with `extras` (the representation arrays of
        matrix/representations.py and the answer arrays of matrix/answers.py, rows in the same task
        order). columns: int indices [K] of the upstream examples that are its columns (None: all
        N; see `select_columns`). A file holding the same arrays already is left as it is (its
        bytes, and whatever was derived from them, stay valid)."""
        path = path or self.matrix_path
        tasks = list(rows)
        n = len(example_ids)
        ft_MxN = np.stack([rows[t] for t in tasks]).astype(np.float32) if tasks else np.zeros((0, n), np.float32)
        base_N = np.asarray(base_nll, np.float32)
        if ft_MxN.shape[1:] != base_N.shape:
            raise ValueError(f"rows have {ft_MxN.shape[1:]} entries, the base scores {base_N.shape}")
        arrays = dict(Z=ft_MxN - base_N[None, :], ft_nll=ft_MxN, base_nll=base_N, tasks=np.asarray(tasks, dtype=str),
                      example_ids=np.asarray(example_ids, dtype=str),
                      example_sources=np.asarray(example_sources, dtype=str))
        arrays.update({k: np.asarray(v) for k, v in (extras or {}).items()})
        if columns is not None:
            arrays = select_columns(arrays, columns)
        if is_main() and not _holds(path, arrays):
            write_npz(path, **arrays)
        return path


def _holds(path: str, arrays: dict[str, np.ndarray]) -> bool:
    """True when the .npz at `path` reads and holds exactly `arrays` (names, dtypes, values)."""
    if not os.path.isfile(path):
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(arrays):
                return False
            return all(npz[k].dtype == v.dtype and np.array_equal(npz[k], v, equal_nan=v.dtype.kind == "f")
                       for k, v in arrays.items())
    except Exception:  # unreadable: rewrite it
        return False
