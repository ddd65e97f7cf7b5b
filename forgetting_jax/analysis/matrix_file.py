"""Reading a forgetting-matrix file with clear errors.

M.npz holds `Z` (float [M, N], NaN = missing) and `tasks` (str [M]); optionally `example_ids`
[N], `example_sources` [N], `example_texts` [N] (each example's first characters:
matrix/example_texts.py), `base_nll` [N], `ft_nll` [M, N], and the base model's
representations for the representation forecasters: `task_embeddings` [M, D] and
`example_embeddings` [N, D] (mean-pooled), `example_last_hidden` [N, D],
`task_example_last_hidden` [M, S, D] and `task_example_count` [M] (last token; see
matrix/representations.py); the similarity measures' inputs (analysis/similarity.py), each pair
all or nothing: `task_gradients` [M, P] and `example_gradients` [N, P] (the base model's loss
gradients, projected to P dimensions: matrix/gradients.py, matrix.gradient_dim > 0), and
`task_text_embeddings` [M, E] and `example_text_embeddings` [N, E] (a sentence-embedding model's
mean-pooled states of the texts: matrix/text_embeddings.py, matrix.embedder). A matrix of lost
answers (`metric` = "exact_match", matrix/answers.py) also holds `correct_before` [N] and
`correct_after` [M, N] (bool) and `drop` [M, N] (0/1), and Z is the drop matrix; `metric` reads as
"nll" when absent. Its columns may be a subset of the upstream examples (`em_columns` =
"base_correct", the default: only those the base model answers right, so correct_before is all
true; "all": every one): `columns` [N] (int64, increasing) are the indices of its columns among the
`upstream_size` upstream examples (when absent: all of them, in order). Every field with an
upstream axis holds the N columns. Matrices written by `run` also record their provenance as
strings (matrix/provenance.py): upstream_settings, base_fingerprint, base_model_dir,
tokenizer_fingerprint, scoring_dtype.
"""

import os
import zipfile
from typing import Any

import numpy as np


PROVENANCE = ("upstream_settings", "base_fingerprint", "base_model_dir", "tokenizer_fingerprint", "scoring_dtype")


class MatrixFileError(ValueError):
    """The file is missing or does not follow the contract; the message names file and field."""


def read_matrix_file(path: str) -> dict[str, Any]:
    """Loads and checks a matrix file; returns its arrays (Z as float32, names as str lists)."""
    if not os.path.isfile(path):
        raise MatrixFileError(f"{path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise MatrixFileError(f"{path}: not a readable .npz file ({err})") from err
    with npz:
        names = set(npz.files)
        for key in ("Z", "tasks"):
            if key not in names:
                raise MatrixFileError(f"{path}: missing field {key!r} (has {sorted(names)})")
        try:
            arrays = {key: npz[key] for key in names}
        except ValueError as err:
            raise MatrixFileError(f"{path}: cannot read a field ({err})") from err
    z = arrays["Z"]
    if z.ndim != 2 or not np.issubdtype(z.dtype, np.number):
        raise MatrixFileError(f"{path}: field 'Z' must be a numeric [M, N] array, got "
                              f"{z.dtype} {z.shape}")
    z = np.asarray(z, np.float32)
    m, n = z.shape
    if m < 2 or n < 2:
        raise MatrixFileError(f"{path}: field 'Z' must have at least 2 rows and 2 columns, got "
                              f"{z.shape}")
    out: dict[str, Any] = {"Z": z}
    out["tasks"] = _strings(path, arrays, "tasks", m)
    if len(set(out["tasks"])) != m:
        raise MatrixFileError(f"{path}: field 'tasks' has duplicate names")
    for key in ("example_ids", "example_sources", "example_texts"):
        if key in arrays:
            out[key] = _strings(path, arrays, key, n)
    out.setdefault("example_ids", [str(j) for j in range(n)])
    for key in PROVENANCE:  # matrix/provenance.py: how `forecast` re-reads and checks the columns
        if key in arrays:
            if arrays[key].ndim != 0 or arrays[key].dtype.kind != "U":
                raise MatrixFileError(f"{path}: field {key!r} must be a string, got {arrays[key].dtype} "
                                      f"{arrays[key].shape}")
            out[key] = str(arrays[key])
    for key, shape in (("base_nll", (n,)), ("ft_nll", (m, n))):
        if key in arrays:
            out[key] = _shaped(path, arrays, key, shape)
    for key, rows in (("task_embeddings", m), ("example_embeddings", n)):
        if key in arrays:
            a = arrays[key]
            if a.ndim != 2 or a.shape[0] != rows:
                raise MatrixFileError(f"{path}: field {key!r} must be [{rows}, D], got "
                                      f"{a.shape}")
            out[key] = np.asarray(a, np.float32)
    if "task_embeddings" in out and "example_embeddings" in out:
        if out["task_embeddings"].shape[1] != out["example_embeddings"].shape[1]:
            raise MatrixFileError(f"{path}: fields 'task_embeddings' and 'example_embeddings' "
                                  "have different widths")
    out.update(similarity_fields(path, arrays, m, n))
    _last_hidden(path, arrays, out, m, n)
    _answers(path, arrays, out, m, n)
    _columns(path, arrays, out, n)
    return out


# The optional pairs of similarity inputs: (task field [M, W], example field [N, W], W's name).
SIMILARITY_PAIRS = (("task_gradients", "example_gradients", "P"),
                    ("task_text_embeddings", "example_text_embeddings", "E"))


def similarity_fields(path: str, arrays: dict, m: int, n: int) -> dict[str, np.ndarray]:
    """The similarity inputs of `arrays` that are present (SIMILARITY_PAIRS), checked: each pair
    both or neither, numeric, [M, W] and [N, W] of one width W; float32 copies. MatrixFileError
    naming `path` and the field otherwise (`path` may name where the arrays come from)."""
    out = {}
    for task_key, example_key, width in SIMILARITY_PAIRS:
        present = [k for k in (task_key, example_key) if k in arrays]
        if not present:
            continue
        if len(present) == 1:
            other = example_key if present[0] == task_key else task_key
            raise MatrixFileError(f"{path}: field {present[0]!r} needs field {other!r} beside it (the pair is "
                                  "all or nothing)")
        for key, rows in ((task_key, m), (example_key, n)):
            a = arrays[key]
            axis = "M" if key == task_key else "N"
            if a.ndim != 2 or a.shape[0] != rows or not np.issubdtype(a.dtype, np.number):
                raise MatrixFileError(f"{path}: field {key!r} must be a numeric [{axis}={rows}, {width}] array to "
                                      f"match 'Z', got {a.dtype} {a.shape}")
        if arrays[task_key].shape[1] != arrays[example_key].shape[1]:
            raise MatrixFileError(f"{path}: fields {task_key!r} {arrays[task_key].shape} and {example_key!r} "
                                  f"{arrays[example_key].shape} must have the same width {width}")
        if arrays[task_key].shape[1] < 1:
            raise MatrixFileError(f"{path}: fields {task_key!r} and {example_key!r} have width 0")
        out[task_key] = np.asarray(arrays[task_key], np.float32)
        out[example_key] = np.asarray(arrays[example_key], np.float32)
    return out


def _columns(path, arrays, out, n) -> None:
    """columns [n] (increasing int indices among upstream_size examples), em_columns and
    upstream_size; a file without them has all of its upstream examples as columns."""
    size = arrays.get("upstream_size", np.asarray(n))
    if size.ndim or size.dtype.kind not in "iu" or int(size) < n:
        raise MatrixFileError(f"{path}: field 'upstream_size' must be an int of at least {n}, got {size.dtype} "
                              f"{size.shape} {size}")
    columns = arrays.get("columns", np.arange(n, dtype=np.int64))
    if columns.shape != (n,) or columns.dtype.kind not in "iu":
        raise MatrixFileError(f"{path}: field 'columns' must be int [{n}] to match 'Z', got {columns.dtype} "
                              f"{columns.shape}")
    if n and (columns.min() < 0 or columns.max() >= int(size) or (np.diff(columns) <= 0).any()):
        raise MatrixFileError(f"{path}: field 'columns' must be increasing indices below upstream_size {int(size)}")
    em_columns = str(arrays["em_columns"]) if "em_columns" in arrays else "all" if int(size) == n else "subset"
    if "em_columns" in arrays and em_columns not in ("base_correct", "all"):
        raise MatrixFileError(f"{path}: field 'em_columns' is {em_columns!r}, not base_correct or all")
    if em_columns == "all" and int(size) != n:
        raise MatrixFileError(f"{path}: field 'em_columns' is 'all' but the file has {n} of {int(size)} columns")
    if em_columns == "base_correct" and not np.all(out.get("correct_before", False)):
        raise MatrixFileError(f"{path}: field 'em_columns' is 'base_correct' but 'correct_before' is not all true "
                              "(or absent)")
    out.update(columns=np.asarray(columns, np.int64), upstream_size=int(size), em_columns=em_columns)


def _answers(path, arrays, out, m, n) -> None:
    """The exact-match fields: metric, and with exact_match all of correct_before, correct_after
    and drop, consistent with each other and with Z."""
    metric = str(arrays["metric"]) if "metric" in arrays else "nll"
    if metric not in ("nll", "exact_match"):
        raise MatrixFileError(f"{path}: field 'metric' is {metric!r}, not nll or exact_match")
    out["metric"] = metric
    keys = ("correct_before", "correct_after", "drop")
    if metric != "exact_match":
        return
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise MatrixFileError(f"{path}: metric exact_match needs field(s) {', '.join(missing)}")
    before = _shaped_as(path, arrays, "correct_before", (n,), "b")
    after = _shaped_as(path, arrays, "correct_after", (m, n), "b")
    drop = _shaped_as(path, arrays, "drop", (m, n), "biu")
    if not np.array_equal(drop.astype(bool), before[None, :] & ~after):
        raise MatrixFileError(f"{path}: field 'drop' is not correct_before and not correct_after")
    if not np.array_equal(out["Z"], drop.astype(np.float32)):
        raise MatrixFileError(f"{path}: field 'Z' of an exact_match matrix must equal 'drop'")
    out.update(correct_before=before, correct_after=after, drop=drop.astype(np.uint8))


def _shaped_as(path, arrays, key, shape, kinds) -> np.ndarray:
    a = arrays[key]
    if a.shape != shape or a.dtype.kind not in kinds:
        raise MatrixFileError(f"{path}: field {key!r} must be {shape} of kind {kinds}, got {a.dtype} {a.shape}")
    return a


def _last_hidden(path, arrays, out, m, n) -> None:
    """The last-token representations: all three fields or none, consistent shapes."""
    keys = ("example_last_hidden", "task_example_last_hidden", "task_example_count")
    present = [k for k in keys if k in arrays]
    if not present:
        return
    if len(present) != len(keys):
        missing = [k for k in keys if k not in arrays]
        raise MatrixFileError(f"{path}: field(s) {', '.join(missing)} missing (the last-token "
                              f"representations need all of {', '.join(keys)})")
    ex, task, count = (arrays[k] for k in keys)
    if ex.ndim != 2 or ex.shape[0] != n:
        raise MatrixFileError(f"{path}: field 'example_last_hidden' must be [{n}, D], got {ex.shape}")
    if task.ndim != 3 or task.shape[0] != m or task.shape[2] != ex.shape[1]:
        raise MatrixFileError(f"{path}: field 'task_example_last_hidden' must be [{m}, S, "
                              f"{ex.shape[1]}], got {task.shape}")
    if count.shape != (m,) or count.dtype.kind not in "iu":
        raise MatrixFileError(f"{path}: field 'task_example_count' must be int [{m}], got "
                              f"{count.dtype} {count.shape}")
    if (count < 0).any() or (count > task.shape[1]).any():
        raise MatrixFileError(f"{path}: field 'task_example_count' must be in [0, "
                              f"{task.shape[1]}]")
    out["example_last_hidden"] = np.asarray(ex, np.float32)
    out["task_example_last_hidden"] = np.asarray(task, np.float32)
    out["task_example_count"] = np.asarray(count, np.int64)


def _strings(path, arrays, key, length) -> list[str]:
    a = arrays[key]
    if a.ndim != 1 or a.shape[0] != length:
        raise MatrixFileError(f"{path}: field {key!r} must be [{length}] to match 'Z', got "
                              f"shape {a.shape}")
    return [str(x) for x in a.tolist()]


def _shaped(path, arrays, key, shape) -> np.ndarray:
    a = arrays[key]
    if a.shape != shape:
        raise MatrixFileError(f"{path}: field {key!r} must have shape {shape}, got {a.shape}")
    return np.asarray(a, np.float32)
