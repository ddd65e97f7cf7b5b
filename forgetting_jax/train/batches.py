"""Per-step batches of a training run, as device arrays [A, R, L] (A micro-batches of R rows).

Two ways to fill a step, both a pure function of the step number (so a resumed run sees exactly
the batches an uninterrupted one sees):
  rows      `batch_size` packed rows per step, from the data layer's `PackedBatches` (pre-training:
            language-model chunks packed densely, every row full).
  examples  exactly `batch_size` examples per step, in a seeded order per epoch, packed into as few
            rows as they need (`packing.first_fit_decreasing`); rows fill micro-batch 0 first and
            micro-batches left empty are skipped by the step. This is the paper's recipe (an
            effective batch of 8 examples) at the cost of packed rows, not of 8 padded rows.
"""

import dataclasses
from typing import Sequence

import jax
import numpy as np

from forgetting_jax.data.packing import PackedRows, first_fit_decreasing, materialize_rows
from forgetting_jax.data.pipeline import PackedBatches, PipelineConfig
from forgetting_jax.data.records import Example
from forgetting_jax.train.step import BATCH_FIELDS


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    batching: str  # "rows" | "examples"
    batch_size: int  # rows (rows) or examples (examples) per optimizer step
    micro_batches: int  # A
    micro_rows: int  # R
    row_length: int  # L
    max_segments: int = 64
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class BatchStats:
    real_tokens: int  # tokens of examples (not padding)
    loss_tokens: int  # tokens trained on
    examples: int


def _pairs(examples: Sequence[Example]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [e.pair if isinstance(e, Example) else e for e in examples]


class ExampleBatches:
    """`batch_size` examples per step; epoch e visits every example once in the order of
    PCG64([seed, e]); step s takes positions [s * batch_size, (s + 1) * batch_size) of the stream."""

    def __init__(self, examples: Sequence[Example], settings: BatchSettings):
        if not examples:
            raise ValueError("no examples to train on")
        self.settings = settings
        self.examples = _pairs(examples)
        self.capacity = settings.micro_batches * settings.micro_rows
        if self.capacity < settings.batch_size:
            raise ValueError(f"{settings.micro_batches} x {settings.micro_rows} rows cannot hold "
                             f"{settings.batch_size} examples")
        self._order: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order[0] != epoch:
            order = np.random.Generator(np.random.PCG64([self.settings.seed, epoch])).permutation(len(self.examples))
            self._order = (epoch, order)
        return self._order[1]

    def stream(self, first: int, count: int) -> list[int]:
        """Example indices at positions [first, first + count) of the epoch-ordered stream."""
        n = len(self.examples)
        out = []
        for g in range(first, first + count):
            epoch, position = divmod(g, n)
            out.append(int(self._epoch_order(epoch)[position]))
        return out

    def step_examples(self, step: int) -> list[int]:
        return self.stream(step * self.settings.batch_size, self.settings.batch_size)

    def batch(self, step: int) -> PackedRows:
        return pack_step([self.examples[i] for i in self.step_examples(step)], self.settings, self.capacity)


def pack_step(chosen: Sequence[tuple[np.ndarray, np.ndarray]], settings: BatchSettings, num_rows: int) -> PackedRows:
    """One step's examples packed into `num_rows` rows (first-fit decreasing; empty rows at the end)."""
    rows = first_fit_decreasing([len(ids) for ids, _ in chosen], settings.row_length, settings.max_segments)
    return materialize_rows(chosen, rows, settings.row_length, settings.max_segments, num_rows=num_rows)


class RowBatches:
    """`batch_size` packed rows per step from the data layer's pipeline, repeating forever."""

    def __init__(self, examples: Sequence[Example], settings: BatchSettings):
        if settings.micro_batches * settings.micro_rows != settings.batch_size:
            raise ValueError(f"{settings.micro_batches} x {settings.micro_rows} rows != batch of {settings.batch_size}")
        self.settings = settings
        self.pipeline = PackedBatches(examples, PipelineConfig(
            batch_rows=settings.batch_size, row_length=settings.row_length, max_segments=settings.max_segments,
            seed=settings.seed))

    def batch(self, step: int) -> PackedRows:
        return self.pipeline.batch(step)


def make_batches(examples: Sequence[Example], settings: BatchSettings):
    if settings.batching == "examples":
        return ExampleBatches(examples, settings)
    if settings.batching == "rows":
        return RowBatches(examples, settings)
    raise ValueError(f"batching {settings.batching!r} is not one of rows, examples")


def to_device(rows: PackedRows | Sequence[PackedRows], sharding: jax.sharding.Sharding,
              leading: int | None = None) -> dict:
    """The five row arrays as global jax arrays, [leading, R, L] when leading is given, else
    [R, L]; a sequence of P tasks' rows gives [P, leading, R, L] (or [P, R, L]).

    Every process holds the whole host batch; each device receives only its own slice.
    """
    tasks = not isinstance(rows, PackedRows)
    out = {}
    for name in BATCH_FIELDS:
        array = np.stack([np.asarray(getattr(r, name)) for r in rows]) if tasks else np.asarray(getattr(rows, name))
        if leading is not None:
            array = array.reshape(array.shape[:int(tasks)] + (leading, -1, array.shape[-1]))
        out[name] = jax.make_array_from_callback(array.shape, sharding, lambda index, a=array: a[index])
    return out


def stats_of(rows: PackedRows) -> BatchStats:
    return BatchStats(real_tokens=int((rows.segment_ids > 0).sum()), loss_tokens=int(rows.loss_mask.sum()),
                      examples=int((rows.example_index >= 0).sum()))


def validation_rows(examples: Sequence[Example], rows_per_batch: int, row_length: int, max_segments: int,
                    every: int) -> list[PackedRows]:
    """Every validation example once, packed (fixed seed) into batches of `rows_per_batch` rows
    (the last one padded); none when validation is off (every == 0) or there is nothing to validate."""
    if not every or not examples:
        return []
    pipeline = PackedBatches(examples, PipelineConfig(batch_rows=rows_per_batch, row_length=row_length,
                                                      max_segments=max_segments, seed=0, num_epochs=1))
    return [pipeline.batch(step) for step in range(pipeline.num_steps)]
