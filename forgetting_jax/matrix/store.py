"""The forgetting-matrix store: base scores, one file per finished row, the assembled matrix.

Layout under `root` (normally W/matrix):
  base_nll.npz          example_id [N], nll [N], num_tokens [N], fingerprint: the base model's
                        scores of the upstream examples, computed once and reused.
  rows/<task>.npz       task, ft_nll [N], fingerprint: one finished row, written as soon as its
                        task is scored (a killed run loses at most the row in progress).
  forgetting.npz        Z [M, N] = ft_nll - base_nll, ft_nll [M, N], base_nll [N], tasks [M],
                        example_ids [N], example_sources [N]: the finished rows, in task order.

Every file is written atomically and carries the fingerprint of what produced it; a file whose
fingerprint differs from the one asked for is treated as absent (and overwritten when redone).
Only process 0 writes.
"""

import hashlib
import os
import re
from typing import Sequence

import jax
import numpy as np

from forgetting_jax.utils.fingerprint import fingerprint
from forgetting_jax.utils.io import write_npz


def upstream_fingerprint(example_ids: Sequence[str], token_ids: Sequence[np.ndarray]) -> str:
    """Fingerprint of the upstream set: its ids and every token, in order."""
    digest = hashlib.sha256()
    for example_id, ids in zip(example_ids, token_ids, strict=True):
        digest.update(example_id.encode("utf-8") + b"\0")
        digest.update(np.asarray(ids, np.int32).tobytes() + b"\1")
    return digest.hexdigest()[:16]


def task_filename(task: str) -> str:
    """A file name for a task name: safe characters kept, others replaced, a hash when changed."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", task).strip(".") or "task"
    if safe != task:
        safe += "-" + fingerprint(task, 8)
    return safe


def _read(path: str, expected_fingerprint: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with np.load(path) as data:
        if "fingerprint" not in data or str(data["fingerprint"]) != expected_fingerprint:
            return None
        return {k: data[k] for k in data.files}


class MatrixStore:
    """Reads and writes the files of one forgetting matrix (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.base_path = os.path.join(root, "base_nll.npz")
        self.rows_dir = os.path.join(root, "rows")
        self.matrix_path = os.path.join(root, "forgetting.npz")

    @staticmethod
    def _writer() -> bool:
        return jax.process_index() == 0

    def row_path(self, task: str) -> str:
        return os.path.join(self.rows_dir, task_filename(task) + ".npz")

    def base(self, fp: str) -> dict | None:
        """{'example_id', 'nll', 'num_tokens'} when the stored base scores have fingerprint `fp`."""
        return _read(self.base_path, fp)

    def write_base(self, fp: str, example_ids: Sequence[str], nll: np.ndarray, num_tokens: np.ndarray) -> None:
        if self._writer():
            write_npz(self.base_path, example_id=np.asarray(example_ids, dtype=str),
                      nll=np.asarray(nll, np.float32), num_tokens=np.asarray(num_tokens, np.int32),
                      fingerprint=np.asarray(fp))

    def row(self, task: str, fp: str) -> np.ndarray | None:
        """The finished row's ft_nll [N] when its fingerprint is `fp`, else None."""
        data = _read(self.row_path(task), fp)
        if data is None or str(data["task"]) != task:
            return None
        return data["ft_nll"]

    def write_row(self, task: str, fp: str, ft_nll: np.ndarray) -> None:
        if self._writer():
            write_npz(self.row_path(task), task=np.asarray(task), ft_nll=np.asarray(ft_nll, np.float32),
                      fingerprint=np.asarray(fp))

    def assemble(self, rows: dict[str, np.ndarray], base_nll: np.ndarray, example_ids: Sequence[str],
                 example_sources: Sequence[str]) -> str:
        """Writes forgetting.npz from finished rows {task: ft_nll [N]} (in the dict's order)."""
        tasks = list(rows)
        n = len(example_ids)
        ft_MxN = np.stack([rows[t] for t in tasks]).astype(np.float32) if tasks else np.zeros((0, n), np.float32)
        base_N = np.asarray(base_nll, np.float32)
        if ft_MxN.shape[1:] != base_N.shape:
            raise ValueError(f"rows have {ft_MxN.shape[1:]} entries, the base scores {base_N.shape}")
        if self._writer():
            write_npz(self.matrix_path, Z=ft_MxN - base_N[None, :], ft_nll=ft_MxN, base_nll=base_N,
                      tasks=np.asarray(tasks, dtype=str), example_ids=np.asarray(example_ids, dtype=str),
                      example_sources=np.asarray(example_sources, dtype=str))
        return self.matrix_path
