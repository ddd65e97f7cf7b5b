"""A counter-based random generator whose draws are the same on every Python and NumPy version.

Each draw is sha256(key, counter): nothing depends on `random` or NumPy stream details, so the
demo task suite is identical everywhere.
"""

import hashlib
from typing import Sequence, TypeVar

T = TypeVar("T")


class StableRng:
    """Deterministic draws from a key such as (seed, task name)."""

    def __init__(self, *key: object):
        self._key = "\x00".join(map(str, key)).encode("utf-8")
        self._counter = 0

    def bits64(self) -> int:
        digest = hashlib.sha256(self._key + b"\x01" + str(self._counter).encode()).digest()
        self._counter += 1
        return int.from_bytes(digest[:8], "big")

    def randint(self, low: int, high: int) -> int:
        """An integer in [low, high], both included."""
        if high < low:
            raise ValueError(f"empty range [{low}, {high}]")
        return low + self.bits64() % (high - low + 1)

    def choice(self, items: Sequence[T]) -> T:
        return items[self.randint(0, len(items) - 1)]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """k distinct items, in random order (partial Fisher-Yates)."""
        pool = list(items)
        for i in range(k):
            j = self.randint(i, len(pool) - 1)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def coin(self) -> bool:
        return self.bits64() & 1 == 1
