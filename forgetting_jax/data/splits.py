"""Deterministic train/validation splits and subsamples, keyed by example id.

Each record gets a key sha256(seed, purpose, id): the same on every machine and Python version,
independent of file order. A split puts the lowest-keyed records of each task in validation; a
subsample keeps the n lowest-keyed records, so a smaller subsample is a subset of a larger one.
Outputs keep the input order.
"""

import hashlib
from typing import Sequence


def record_key(record_id: str, seed: int, purpose: str) -> int:
    """A 64-bit key of one id, stable across machines and versions."""
    digest = hashlib.sha256(f"{seed}\x00{purpose}\x00{record_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _lowest(records: Sequence[dict], n: int, seed: int, purpose: str) -> set[int]:
    keys = sorted(range(len(records)), key=lambda i: (record_key(records[i]["id"], seed, purpose), i))
    return set(keys[:n])


def _by_task(records: Sequence[dict]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record.get("task", ""), []).append(i)
    return groups


def split_records(records: Sequence[dict], validation_fraction: float = 0.1, seed: int = 0,
                  max_validation: int | None = None) -> dict[str, list[dict]]:
    """{"train": [...], "validation": [...]}: per task, round(fraction * n) records (at most
    max_validation, and never all of a task's records) go to validation."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    validation: set[int] = set()
    for indices in _by_task(records).values():
        n = min(int(round(validation_fraction * len(indices))), len(indices) - 1)
        if max_validation is not None:
            n = min(n, max_validation)
        members = [records[i] for i in indices]
        validation |= {indices[j] for j in _lowest(members, max(n, 0), seed, "split")}
    return {"train": [r for i, r in enumerate(records) if i not in validation],
            "validation": [r for i, r in enumerate(records) if i in validation]}


def subsample(records: Sequence[dict], n: int | None, seed: int = 0, per_task: bool = False) -> list[dict]:
    """At most n records (n per task with per_task), chosen by key, in input order. None: all."""
    if n is None:
        return list(records)
    if per_task:
        keep: set[int] = set()
        for indices in _by_task(records).values():
            members = [records[i] for i in indices]
            keep |= {indices[j] for j in _lowest(members, n, seed, "subsample")}
    else:
        keep = _lowest(records, n, seed, "subsample")
    return [r for i, r in enumerate(records) if i in keep]


def group_by_task(records: Sequence[dict]) -> dict[str, list[dict]]:
    """Records per task, tasks in order of first appearance."""
    return {task: [records[i] for i in indices] for task, indices in _by_task(records).items()}
