"""Results computed from a file, kept once per process while the file is unchanged.

A file is "unchanged" while its size and modification time are: reading a corpus or an upstream
set again after the file was rewritten recomputes it, while the next command of the same process
(a reused `run`, `replay` after `run`) does not read it twice.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


def file_stamp(path: str | None) -> tuple[int, int] | None:
    """(size in bytes, modification time in ns) of the file `path`, or None when there is none
    (no path, a directory, a missing file)."""
    if not path or not os.path.isfile(path):
        return None
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


class FileCache:
    """Up to `size` results, each keyed by the caller's `key` and the stamp of the file it was
    computed from; the least recently used goes first."""

    def __init__(self, size: int = 1):
        if size < 1:
            raise ValueError(f"FileCache size {size} is below 1")
        self.size = size
        self._entries: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: Hashable, path: str | None, compute: Callable[[], T]) -> T:
        """compute()'s result for (`key`, the stamp of `path`): computed on the first call, then
        returned as is while the file is unchanged."""
        entry = (key, file_stamp(path))
        if entry in self._entries:
            self._entries.move_to_end(entry)
            return self._entries[entry]  # type: ignore[return-value]
        value = compute()
        self._entries[entry] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
