"""Reading a forgetting-matrix file with clear errors.

M.npz holds `Z` (float [M, N], NaN = missing) and `tasks` (str [M]); optionally `example_ids`
[N], `example_sources` [N], `base_nll` [N], `ft_nll` [M, N], and for the similarity analyses
`task_embeddings` [M, D] and `example_embeddings` [N, D].
"""

import os
import zipfile
from typing import Any

import numpy as np


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
    for key in ("example_ids", "example_sources"):
        if key in arrays:
            out[key] = _strings(path, arrays, key, n)
    out.setdefault("example_ids", [str(j) for j in range(n)])
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
    return out


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
