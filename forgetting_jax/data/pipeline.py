"""The training input pipeline: fixed-shape packed batches in a seeded order, resumable by step.

Examples are packed into rows once (`packing.first_fit_decreasing` over windows of a seeded
shuffle); each epoch visits every row once, in an order drawn from (seed, epoch). Rows form a
stream (epoch 0's rows, then epoch 1's, ...) cut into batches of `batch_rows` rows, so batch `step`
is a pure function of the step: resuming at step s gives exactly the batches a run from step 0
gives from s on. A background thread builds batches ahead of time so the device never waits on
Python; with several processes, each takes its own slice of the rows of every batch.
"""

import dataclasses
import queue
import threading
from typing import Any, Iterator, Sequence

import numpy as np

from forgetting_jax.data.packing import PackedRows, first_fit_decreasing, materialize_rows
from forgetting_jax.data.records import Example

ExampleLike = Example | tuple[np.ndarray, np.ndarray]


def _pair(example: ExampleLike) -> tuple[np.ndarray, np.ndarray]:
    return example.pair if isinstance(example, Example) else example


def pack_rows(lengths: Sequence[int], row_length: int, max_segments: int, seed: int = 0,
              window: int = 4096) -> list[list[int]]:
    """Rows of example indices: a seeded shuffle of the examples, first-fit-decreasing packed in
    windows of `window` examples (bounding the packing cost on large sets)."""
    order = np.random.Generator(np.random.PCG64([seed, 0x7061636B])).permutation(len(lengths))
    rows: list[list[int]] = []
    for begin in range(0, len(order), window):
        members = order[begin: begin + window]
        packed = first_fit_decreasing([int(lengths[i]) for i in members], row_length, max_segments)
        rows += [[int(members[j]) for j in row] for row in packed]
    return rows


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    batch_rows: int  # rows per step, all processes together
    row_length: int  # tokens per row
    max_segments: int = 64  # examples per row at most
    seed: int = 0
    num_epochs: int | None = None  # None: repeat forever
    pack_window: int = 4096


class PackedBatches:
    """Batches of packed rows over `examples`; `batch(step)` is random access, iteration prefetches.

    Each batch is a `PackedRows` of batch_rows rows; `example_index` refers to
    positions in `examples` (their ids: `example_ids`). With num_epochs, the last batch is padded
    with empty rows (no loss).
    """

    def __init__(self, examples: Sequence[ExampleLike], config: PipelineConfig):
        if not examples:
            raise ValueError("no examples to batch")
        self.config = config
        self.examples = [_pair(e) for e in examples]
        self.example_ids = [e.id if isinstance(e, Example) else str(i) for i, e in enumerate(examples)]
        lengths = [len(ids) for ids, _ in self.examples]
        too_long = [i for i, n in enumerate(lengths) if n > config.row_length]
        if too_long:
            i = too_long[0]
            raise ValueError(f"{len(too_long)} example(s) longer than the row length {config.row_length}, "
                             f"e.g. {self.example_ids[i]!r} with {lengths[i]} tokens; truncate them first")
        self.rows = pack_rows(lengths, config.row_length, config.max_segments, config.seed, config.pack_window)
        self._order_cache: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    @property
    def rows_per_epoch(self) -> int:
        return len(self.rows)

    @property
    def num_steps(self) -> int | None:
        """Steps until the data is exhausted (None when repeating forever)."""
        if self.config.num_epochs is None:
            return None
        return -(-self.rows_per_epoch * self.config.num_epochs // self.config.batch_rows)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the rows (cached for the current epoch)."""
        cached_epoch, order = self._order_cache
        if cached_epoch != epoch:
            order = np.random.Generator(np.random.PCG64([self.config.seed, epoch])).permutation(len(self.rows))
            self._order_cache = (epoch, order)
        return order

    def row_indices(self, step: int) -> list[int]:
        """Positions in `self.rows` of the rows of batch `step` (fewer at the very end)."""
        if step < 0 or (self.num_steps is not None and step >= self.num_steps):
            raise IndexError(f"step {step} is outside the {self.num_steps} steps of the data")
        total = self.rows_per_epoch * (self.config.num_epochs or 0)
        first = step * self.config.batch_rows
        out = []
        for g in range(first, first + self.config.batch_rows):
            if self.config.num_epochs is not None and g >= total:
                break
            epoch, position = divmod(g, self.rows_per_epoch)
            out.append(int(self._epoch_order(epoch)[position]))
        return out

    def batch(self, step: int) -> PackedRows:
        """The rows of batch `step`: arrays [batch_rows, row_length]."""
        rows = [self.rows[i] for i in self.row_indices(step)]
        return materialize_rows(self.examples, rows, self.config.row_length, self.config.max_segments,
                                self.config.batch_rows)

    def iterate(self, start_step: int = 0, prefetch: int = 2) -> "Prefetcher":
        """Batches from `start_step` on (through the end of the data, or forever), built `prefetch`
        ahead in a background thread."""
        end = self.num_steps

        def produce() -> Iterator[PackedRows]:
            step = start_step
            while end is None or step < end:
                yield self.batch(step)
                step += 1

        return Prefetcher(produce(), prefetch)

    def __iter__(self) -> Iterator[Any]:
        return self.iterate(0)


_DONE = object()


class Prefetcher:
    """Runs an iterator in a background thread, `size` items ahead; errors reach the consumer.

    Use as an iterator; `close()` (or leaving a `with` block) stops the thread.
    """

    def __init__(self, iterator: Iterator[Any], size: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator: Iterator[Any]) -> None:
        try:
            for item in iterator:
                if not self._put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            self._put((None, err))
            return
        self._put((_DONE, None))

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        item, err = self._queue.get()
        if err is not None:
            self.close()
            raise err
        if item is _DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()
