"""Replayed upstream examples mixed into a fine-tuning run's packed batches, at an exact ratio.

A run with replay sees one stream of examples: positions g = 0, 1, 2, ... of which position g is
a replay slot when floor((g + 1) p) > floor(g p), p = r / (1 + r). So among the first G positions
exactly floor(G p) are upstream examples and the rest task examples: one upstream example per
1/r task examples, spread evenly (r = 1/8: positions 8, 17, 26, ...). Task positions take the
task's examples in the order of `ExampleBatches` (a seeded permutation per epoch); replay slot u
takes the upstream example `schedule.take(u)` (replay/sampler.py). Step s holds positions
[s B, (s + 1) B) (B = train.batch_size examples), packed into rows like any step. The run has
train.steps optimizer steps, as a run without replay has: replayed examples take a share r / (1 + r)
of the batch slots, so the run sees that many fewer task examples. With replay.scale_steps it has
ceil(steps (1 + r)) steps instead, so it sees the task examples a run without replay sees (and runs
more steps than it). Replayed examples keep their own loss masks: every token after the first for
language-model text, the responses for instruction data. Everything is a function of the step
number: a resumed run gets the batches of an uninterrupted one.
"""

import math
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from forgetting_jax.data.packing import PackedRows
from forgetting_jax.data.records import Example
from forgetting_jax.train.batches import BatchSettings, ExampleBatches, pack_step


def replay_fraction(ratio: float) -> Fraction:
    """r as an exact fraction (1/32, not 0.03125000000000001)."""
    r = Fraction(ratio).limit_denominator(1 << 16)
    if r <= 0:
        raise ValueError(f"replay.ratio must be positive, got {ratio} (strategy 'none' trains without replay)")
    return r


def replay_positions(first: int, count: int, ratio: Fraction) -> tuple[np.ndarray, np.ndarray]:
    """For stream positions [first, first + count): (is a replay slot [count] bool, index [count]):
    the replay slot number at replay positions, the task stream position elsewhere."""
    p = ratio / (1 + ratio)
    before = np.asarray([g * p.numerator // p.denominator for g in range(first, first + count + 1)], np.int64)
    replay = before[1:] > before[:-1]
    positions = np.arange(first, first + count, dtype=np.int64)
    return replay, np.where(replay, before[:-1], positions - before[:-1])


def mixed_steps(steps: int, ratio: Fraction, scale_steps: bool = False) -> int:
    """The optimizer steps of a replay run given train.steps: `steps` (the default: the steps of a
    run without replay); scale_steps: ceil(steps (1 + r)), the steps of a run that sees `steps`
    steps' worth of task examples."""
    return math.ceil(steps * (1 + ratio)) if scale_steps else int(steps)


class MixedBatches:
    """`batch_size` examples per step: task examples and replayed upstream examples, interleaved."""

    def __init__(self, examples: Sequence[Example], upstream: Sequence[Example], schedule: Any,
                 ratio: Fraction, settings: BatchSettings):
        self.tasks = ExampleBatches(examples, settings)
        self.upstream = upstream
        self.schedule = schedule
        self.ratio = ratio
        self.settings = settings
        longest = max((len(e) for e in upstream), default=0)
        if longest > settings.row_length:
            raise ValueError(f"upstream examples of up to {longest} tokens do not fit rows of {settings.row_length} "
                             "(matrix.max_length must not exceed train.row_length)")

    def step_slots(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(is a replayed example [B], task example index or upstream index [B]) of one step."""
        b = self.settings.batch_size
        replay, index = replay_positions(step * b, b, self.ratio)
        out = np.zeros(b, np.int64)
        if (~replay).any():
            task_positions = index[~replay]
            out[~replay] = self.tasks.stream(int(task_positions[0]), len(task_positions))
        if replay.any():
            out[replay] = self.schedule.take(index[replay])
        return replay, out

    def batch(self, step: int) -> PackedRows:
        replay, index = self.step_slots(step)
        chosen = [self.upstream[i].pair if r else self.tasks.examples[i] for r, i in zip(replay, index)]
        return pack_step(chosen, self.settings, self.tasks.capacity)


class ReplayMixture:
    """What `train.finetune.finetune` needs to fine-tune with replay (see its `mixture` argument).

    upstream: the upstream examples (schedule indices point into it). schedule: `take(slots)`, and
    optionally `bind(run_dir, ratio, batch_size)` and `after_step(step, params_fn)` (online
    strategies, which decide later slots from the parameters of an early step). inputs: the
    fingerprint's share: strategy, weights' source, r, T, seed; r and scale_steps are added here.
    scale_steps: run ceil(steps (1 + r)) optimizer steps instead of train.steps (`mixed_steps`).
    protocol: a replay/protocol.py Protocol whose `replay_steps` gives the run's steps instead
    (then part of the fingerprint when it is not the project's).
    """

    def __init__(self, upstream: Sequence[Example], schedule: Any, ratio: float, inputs: dict, label: str = "replay",
                 scale_steps: bool = False, protocol: Any = None):
        self.upstream = list(upstream)
        self.schedule = schedule
        self.ratio = replay_fraction(ratio)
        self.protocol = protocol
        self.scale_steps = bool(scale_steps if protocol is None else protocol.scale_steps)
        self.inputs = dict(inputs, ratio=str(self.ratio), scale_steps=self.scale_steps)
        if protocol is not None and protocol.name != "project":
            self.inputs["protocol"] = protocol.name
        self.label = label

    def total_steps(self, steps: int) -> int:
        """The run's optimizer steps given train.steps (`mixed_steps`, or the protocol's)."""
        if self.protocol is not None:
            return self.protocol.replay_steps(int(steps), self.ratio)
        return mixed_steps(steps, self.ratio, self.scale_steps)

    def describe(self) -> str:
        return f"{self.label}: one upstream example per {float(1 / self.ratio):g} task examples"

    def batches(self, examples: Sequence[Example], settings: BatchSettings, run_dir: str) -> MixedBatches:
        bind = getattr(self.schedule, "bind", None)
        if bind is not None:
            bind(run_dir, self.ratio, settings.batch_size)
        return MixedBatches(examples, self.upstream, self.schedule, self.ratio, settings)

    def after_step(self, step: int, params_fn: Callable[[], Any]) -> None:
        hook = getattr(self.schedule, "after_step", None)
        if hook is not None:
            hook(step, params_fn)
