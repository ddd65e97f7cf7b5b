"""Fingerprints: short stable hashes of whatever produced an artefact."""

import hashlib
import json
import os
import re
from typing import Any

import numpy as np


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__array__": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest(),
                "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if hasattr(obj, "to_dict"):
        return _canonical(obj.to_dict())
    return obj


def fingerprint(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able object (dicts are key-order independent; arrays by content)."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_fingerprint(path: str, length: int = 16) -> str:
    """Hex digest of a file's bytes, or of every file under a directory (names and bytes)."""
    digest = hashlib.sha256()
    paths = [path]
    if os.path.isdir(path):
        paths = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    for p in paths:
        digest.update(os.path.relpath(p, path).encode() if p != path else b"")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


def task_filename(task: str) -> str:
    """A file or directory name for a task name: safe characters kept, others replaced, and a
    hash of the name appended when anything changed (so "a/b" and "a_b" stay distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", task).strip(".") or "task"
    if safe != task:
        safe += "-" + fingerprint(task, 8)
    return safe
