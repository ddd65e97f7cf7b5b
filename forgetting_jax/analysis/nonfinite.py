"""Counting the non-finite entries of a forgetting matrix, so that none is dropped silently.

A forgetting matrix Z [M, N] (M fine-tuning tasks, N upstream examples) may hold NaN (a run or a
score that is missing) and +inf / -inf (a fine-tuning run that diverged). Fits, metrics and
predictions leave every non-finite entry out; `count_nonfinite` counts them by kind and by row so
that the commands can say so in their logs, their JSON and their reports.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_BLOCK_ELEMENTS = 1 << 24  # entries per streamed row block (16M, 16 MB of bool masks)
_LISTED_TASKS = 10  # tasks named in describe(); the rest are summed up as "and K more"


@dataclass(frozen=True)
class NonFinite:
    """Non-finite entries of a matrix Z [M, N].

    nan, posinf, neginf: counts of NaN, +inf and -inf entries.
    total: M * N, the number of entries.
    rows_affected: {task name: non-finite entries in its row}, only rows with at least one,
        in row order (row index as a string when no task names were given).
    """

    nan: int
    posinf: int
    neginf: int
    total: int
    rows_affected: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """All non-finite entries: nan + posinf + neginf."""
        return self.nan + self.posinf + self.neginf

    @property
    def any(self) -> bool:
        """Whether there is at least one non-finite entry."""
        return self.count > 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: counts, total and {task: count} of the affected rows."""
        return {"count": self.count, "nan": self.nan, "posinf": self.posinf,
                "neginf": self.neginf, "total": self.total,
                "rows_affected": dict(self.rows_affected)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NonFinite":
        """Inverse of `as_dict` (the `count` key, being derived, is ignored)."""
        return cls(nan=int(d.get("nan", 0)), posinf=int(d.get("posinf", 0)),
                   neginf=int(d.get("neginf", 0)), total=int(d.get("total", 0)),
                   rows_affected={str(k): int(v)
                                  for k, v in dict(d.get("rows_affected") or {}).items()})

    def describe(self, what: str = "Z") -> str:
        """One plain sentence, e.g. "Z has 12 non-finite entries of 48,000 (3 +inf, 0 -inf, 9 NaN)
        in 2 tasks (task_a: 9, task_b: 3); they are left out of every fit and metric".

        With none it still says so: "Z has no non-finite entries (48,000 entries)".
        """
        if not self.any:
            return f"{what} has no non-finite entries ({self.total:,} entries)"
        n = self.count
        rows = sorted(self.rows_affected.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{task}: {c:,}" for task, c in rows[:_LISTED_TASKS])
        if len(rows) > _LISTED_TASKS:
            listed += f", and {len(rows) - _LISTED_TASKS:,} more"
        tasks = f"{len(rows):,} task{'s' if len(rows) != 1 else ''}"
        return (f"{what} has {n:,} non-finite entr{'ies' if n != 1 else 'y'} of {self.total:,} "
                f"({self.posinf:,} +inf, {self.neginf:,} -inf, {self.nan:,} NaN) in {tasks} "
                f"({listed}); they are left out of every fit and metric")


def count_nonfinite(z_MxN: np.ndarray, tasks: Sequence[str] | None = None,
                    chunk_rows: int | None = None) -> NonFinite:
    """Counts the NaN, +inf and -inf entries of `z_MxN` [M, N], by kind and by row.

    tasks: M row names (default: the row index as a string).
    chunk_rows: rows per streamed block (default: as many as fit in about 16M entries, at least
        one); only one block's boolean masks [chunk_rows, N] exist at a time, never a mask or copy
        of the full matrix, so a 1,000 x 1,000,000 float32 matrix (memory-mapped or not) costs a
        few blocks of extra memory.
    """
    if z_MxN.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {z_MxN.shape}")
    m, n = z_MxN.shape
    if tasks is not None and len(tasks) != m:
        raise ValueError(f"got {len(tasks)} task names for {m} rows")
    if chunk_rows is None:
        chunk_rows = DEFAULT_BLOCK_ELEMENTS // max(n, 1)
    chunk_rows = max(1, int(chunk_rows))
    nan = posinf = neginf = 0
    rows: dict[str, int] = {}
    for start in range(0, m, chunk_rows):
        block = np.asarray(z_MxN[start:start + chunk_rows])
        if not np.issubdtype(block.dtype, np.floating):
            continue  # integer and bool matrices cannot hold NaN or inf
        bad_B = np.count_nonzero(~np.isfinite(block), axis=1)
        hit = np.flatnonzero(bad_B)
        if hit.size == 0:
            continue
        sub = block[hit]  # only the affected rows are inspected by kind
        nan += int(np.count_nonzero(np.isnan(sub)))
        posinf += int(np.count_nonzero(np.isposinf(sub)))
        neginf += int(np.count_nonzero(np.isneginf(sub)))
        for i in hit:
            row = start + int(i)
            rows[str(tasks[row]) if tasks is not None else str(row)] = int(bad_B[i])
    return NonFinite(nan=nan, posinf=posinf, neginf=neginf, total=int(m) * int(n),
                     rows_affected=rows)
