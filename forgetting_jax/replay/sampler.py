"""The replay schedule: which upstream example fills each replay slot of a run, fixed by a seed.

Examples are drawn without replacement with probability softmax(score / T): successive draws
from the examples not drawn yet, each with probability proportional to exp(score / T). That is
the order of score / T + Gumbel noise (the Gumbel-top-k trick), so a whole pass over the pool is
one sort. Examples whose logit is -inf (held out, unscorable, already replayed) are never drawn.
When a run needs more slots than the pool has examples, the next pass draws the pool again with
fresh noise. Pass p uses the generator PCG64([*seed, p]), so slot u's example depends only on the
seed and the logits: a resumed run replays exactly what an uninterrupted run replays.
"""

import threading
from typing import Sequence

import numpy as np


def softmax_weights(score_N: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(score / T) over the finite scores (0 elsewhere): the first draw's probabilities."""
    logits = replay_logits(score_N, temperature)
    finite = np.isfinite(logits)
    out = np.zeros(logits.shape, np.float64)
    shifted = logits[finite] - logits[finite].max()
    out[finite] = np.exp(shifted) / np.exp(shifted).sum()
    return out


def replay_logits(score_N: np.ndarray, temperature: float, allowed_N: np.ndarray | None = None) -> np.ndarray:
    """score / T as float64, -inf where the score is not finite or not allowed."""
    if temperature <= 0:
        raise ValueError(f"replay temperature must be positive, got {temperature}")
    score = np.asarray(score_N, np.float64)
    keep = np.isfinite(score) if allowed_N is None else np.isfinite(score) & np.asarray(allowed_N, bool)
    return np.where(keep, score / temperature, -np.inf)


def draw_pass(logits_N: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Every example with a finite logit once, in the order of successive weighted draws without
    replacement (rng None: highest logit first, ties by index)."""
    logits = np.asarray(logits_N, np.float64)
    candidates = np.flatnonzero(np.isfinite(logits))
    keys = logits[candidates]
    if rng is not None:
        keys = keys + rng.gumbel(size=len(candidates))
    return candidates[np.argsort(-keys, kind="stable")]


class ReplaySchedule:
    """Slot u -> upstream index, for u = 0, 1, ...: passes of weighted draws without replacement.

    logits_N: score / T per upstream example (-inf: never drawn). seed: integers that fix the
    draws. top: no sampling; each pass is the highest logits first. exclude: indices the first
    pass skips (examples an earlier schedule of the same run replayed already).
    """

    def __init__(self, logits_N: np.ndarray, seed: Sequence[int], top: bool = False, exclude: Sequence[int] = ()):
        self.logits_N = np.asarray(logits_N, np.float64)
        if not np.isfinite(self.logits_N).any():
            raise ValueError("no upstream example can be replayed: every replay logit is -inf")
        self.seed = [int(s) for s in seed]
        self.top = top
        self.exclude = np.asarray(exclude, np.int64)
        self._order = np.zeros(0, np.int64)
        self._passes = 0
        self._lock = threading.Lock()  # the batch thread and the training loop may both ask

    def _extend(self) -> None:
        logits = self.logits_N
        if self._passes == 0 and self.exclude.size:
            logits = logits.copy()
            logits[self.exclude] = -np.inf
        rng = None if self.top else np.random.Generator(np.random.PCG64(self.seed + [self._passes]))
        self._order = np.concatenate([self._order, draw_pass(logits, rng)])
        self._passes += 1

    def take(self, slots: np.ndarray) -> np.ndarray:
        """The upstream indices of replay slots `slots` (any order, any length)."""
        slots = np.asarray(slots, np.int64)
        with self._lock:
            while slots.size and self._order.size <= slots.max():
                self._extend()
            return self._order[slots]


class FixedSchedule:
    """Slot u -> order[u mod len(order)]: a replay order decided in advance (gt_mir's)."""

    def __init__(self, order: Sequence[int]):
        self.order = np.asarray(order, np.int64)
        if not self.order.size:
            raise ValueError("no upstream example can be replayed: the replay order is empty")

    def take(self, slots: np.ndarray) -> np.ndarray:
        return self.order[np.asarray(slots, np.int64) % self.order.size]
