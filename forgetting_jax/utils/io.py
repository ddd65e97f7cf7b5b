"""Atomic file writes: every artefact lands complete or not at all."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_npz(path: str, **arrays: Any) -> None:
    """Writes arrays to `path` (.npz, uncompressed) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as indented JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yields a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        yield tmp
        if os.path.isdir(path):
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def move_aside(path: str, reason: str, logger: Any = None) -> str | None:
    """A damaged file or directory renamed to `<path>.damaged-<timestamp>` (kept for inspection,
    never read again), with a warning naming it and `reason`. Returns the new path (None when
    `path` is gone already or cannot be renamed; then it is deleted where possible)."""
    import logging
    import time

    logger = logger or logging.getLogger("forgetting_jax.workspace")
    if not os.path.lexists(path):
        return None
    target = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 0
    while os.path.lexists(target):
        suffix += 1
        target = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
    try:
        os.replace(path, target)
    except OSError as err:
        logger.warning("%s is damaged (%s) and cannot be moved aside (%s); deleting it", path, reason, err)
        try:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        except OSError:
            pass
        return None
    logger.warning("%s is damaged (%s); moved aside to %s and recomputing it", path, reason, target)
    return target


def copy_file(src: str, dst: str) -> bool:
    """Copies the file `src` onto `dst` atomically, unless `dst` holds the same bytes already.
    Returns True when it wrote."""
    import filecmp

    if os.path.isfile(dst) and filecmp.cmp(src, dst, shallow=False):
        return False
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return True
