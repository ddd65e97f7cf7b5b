"""Batched per-example mean NLL: examples packed into one fixed row shape, one compiled step.

Examples (ids_T, mask_T) are packed longest-first into rows of `row_length` tokens with segment
ids (attention never crosses examples), grouped `rows_per_batch` rows to a batch, and the last
batch is padded with empty rows, so every call has the same shape and nothing recompiles after
the first batch. The step returns per-(row, segment) sums of fp32 NLL and scored-token counts
[R, S]; the host maps them back to examples. Batches are built on a host thread ahead of the
device, and results are fetched one batch behind, so the device never waits on Python.

On a mesh that spans several processes (multi-host), every process plans the same batches but
builds and feeds only the rows its own devices hold, reads back only those rows' results, and
the per-example results are combined across processes once at the end: every process returns
the whole [N] result.
"""

import concurrent.futures
import dataclasses
import time
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from forgetting_jax.data.packing import PackedRows, first_fit_decreasing, materialize_rows
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import Decoder, unembedding
from forgetting_jax.models.lm_head import token_nll

ScoredPair = tuple[np.ndarray, np.ndarray]  # (ids_T int32, mask_T bool): mask_T[t] = token t is scored


@dataclasses.dataclass(frozen=True)
class ScoreShape:
    """The one static batch shape of a scoring run."""

    rows_per_batch: int
    row_length: int
    max_segments: int = 64
    chunk_tokens: int = 8192  # tokens per vocabulary-projection chunk

    @property
    def num_chunks(self) -> int:
        return max(1, (self.rows_per_batch * self.row_length) // self.chunk_tokens)


def plan_batches(lengths: Sequence[int], max_length: int, tokens_per_batch: int = 16384, num_devices: int = 1,
                 max_segments: int = 64, multiple: int = 64) -> tuple[ScoreShape, list[list[int]]]:
    """The batch shape for these example lengths, and the packed rows (lists of example indices).

    Row length: the longest example rounded up to `multiple` (and to at most max_length, rounded).
    Rows per batch: at most tokens_per_batch // row_length, balanced so that the packed rows fill
    the last batch as well as the others; a multiple of the device count.
    """
    longest = max(lengths) if len(lengths) else 1
    row_length = max(-(-min(longest, max_length) // multiple) * multiple, longest)
    rows = first_fit_decreasing(lengths, row_length, max_segments)
    most = max(1, tokens_per_batch // row_length)
    num_batches = max(1, -(-len(rows) // most))
    per_batch = max(1, -(-len(rows) // num_batches))
    per_batch = -(-per_batch // num_devices) * num_devices
    return ScoreShape(per_batch, row_length, max_segments), rows


def segment_sums(values_RxL: jax.Array, mask_RxL: jax.Array, segment_ids_RxL: jax.Array,
                 max_segments: int) -> jax.Array:
    """Sum of values where mask, per (row, segment): [R, S]; segment ids start at 1."""
    R, L = values_RxL.shape
    slot_RxL = jnp.arange(R)[:, None] * max_segments + (segment_ids_RxL - 1)
    slot_RxL = jnp.where(mask_RxL & (segment_ids_RxL > 0), slot_RxL, R * max_segments)
    sums = jax.ops.segment_sum(values_RxL.reshape(-1), slot_RxL.reshape(-1), num_segments=R * max_segments + 1)
    return sums[:-1].reshape(R, max_segments)


def nll_sums(hidden_RxLxD: jax.Array, params, config: ModelConfig, shape: ScoreShape, targets_RxL: jax.Array,
             loss_mask_RxL: jax.Array, segment_ids_RxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per packed example: (the fp32 NLL summed over its scored tokens [R, S], their count [R, S]);
    the vocabulary projection in shape.num_chunks chunks (never [R, L, V] fp32 logits at once)."""
    nll_RxL = token_nll(hidden_RxLxD, unembedding(params, config), targets_RxL, shape.num_chunks)
    nll_RxL = jnp.where(loss_mask_RxL, nll_RxL, 0.0)
    nll_sum_RxS = segment_sums(nll_RxL, loss_mask_RxL, segment_ids_RxL, shape.max_segments)
    count_RxS = segment_sums(loss_mask_RxL.astype(jnp.float32), loss_mask_RxL, segment_ids_RxL, shape.max_segments)
    return nll_sum_RxS, count_RxS


def make_score_step(config: ModelConfig, shape: ScoreShape) -> Callable:
    """step(params, tokens, targets, loss_mask, segment_ids, positions) -> (nll_sum_RxS, count_RxS)."""
    model = Decoder(config)

    def step(params, tokens_RxL, targets_RxL, loss_mask_RxL, segment_ids_RxL, positions_RxL):
        hidden_RxLxD = model.apply({"params": params}, tokens_RxL, positions_RxL, segment_ids_RxL)
        return nll_sums(hidden_RxLxD, params, config, shape, targets_RxL, loss_mask_RxL, segment_ids_RxL)

    return step


def representation_sums(hidden_RxLxD: jax.Array, segment_ids_RxL: jax.Array, max_segments: int
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per packed example (row r, segment s), from final hidden states: (their fp32 sum over the
    example's tokens [R, S, D], its token count [R, S], the state at its last token [R, S, D])."""
    hidden_RxLxD = hidden_RxLxD.astype(jnp.float32)
    real_RxL = segment_ids_RxL > 0
    # An example's last token: the next slot holds another segment (or padding, or the row ends).
    next_RxL = jnp.pad(segment_ids_RxL[:, 1:], ((0, 0), (0, 1)))
    last_RxL = real_RxL & (next_RxL != segment_ids_RxL)
    per_dim = jax.vmap(lambda h_RxL, m_RxL: segment_sums(h_RxL, m_RxL, segment_ids_RxL, max_segments),
                       in_axes=(2, None), out_axes=2)
    count_RxS = segment_sums(real_RxL.astype(jnp.float32), real_RxL, segment_ids_RxL, max_segments)
    return per_dim(hidden_RxLxD, real_RxL), count_RxS, per_dim(hidden_RxLxD, last_RxL)


def make_embed_step(config: ModelConfig, shape: ScoreShape) -> Callable:
    """step(params, tokens, targets, loss_mask, segment_ids, positions)
    -> (hidden_sum_RxSxD, count_RxS, last_RxSxD): `representation_sums` of the final hidden states
    (mean pooling, and the representation of last-token forecasters)."""
    model = Decoder(config)

    def step(params, tokens_RxL, targets_RxL, loss_mask_RxL, segment_ids_RxL, positions_RxL):
        del targets_RxL, loss_mask_RxL
        hidden_RxLxD = model.apply({"params": params}, tokens_RxL, positions_RxL, segment_ids_RxL)
        return representation_sums(hidden_RxLxD, segment_ids_RxL, shape.max_segments)

    return step


def make_score_embed_step(config: ModelConfig, shape: ScoreShape) -> Callable:
    """The score and embed steps in one forward pass: (nll_sum_RxS, count_RxS, hidden_sum_RxSxD,
    token_count_RxS, last_RxSxD)."""
    model = Decoder(config)

    def step(params, tokens_RxL, targets_RxL, loss_mask_RxL, segment_ids_RxL, positions_RxL):
        hidden_RxLxD = model.apply({"params": params}, tokens_RxL, positions_RxL, segment_ids_RxL)
        return (nll_sums(hidden_RxLxD, params, config, shape, targets_RxL, loss_mask_RxL, segment_ids_RxL)
                + representation_sums(hidden_RxLxD, segment_ids_RxL, shape.max_segments))

    return step


STEP_BUILDERS = {"nll": make_score_step, "embed": make_embed_step, "nll_embed": make_score_embed_step}
_COMPILED: dict[tuple, Callable] = {}  # (config, shape, kind, mesh) -> jitted step, shared by Scorers


def compiled_step(config: ModelConfig, shape: ScoreShape, kind: str = "nll", mesh: Mesh | None = None) -> Callable:
    """The jitted step for this model config and batch shape; one per process, whatever the weights,
    so scoring M fine-tuned models of one architecture compiles once."""
    key = (config, shape, kind, mesh)
    if key not in _COMPILED:
        kwargs = {}
        if mesh is not None:
            rows = NamedSharding(mesh, P("data"))
            kwargs = dict(in_shardings=(NamedSharding(mesh, P()),) + (rows,) * 5, out_shardings=rows)
        _COMPILED[key] = jax.jit(STEP_BUILDERS[kind](config, shape), **kwargs)
    return _COMPILED[key]


@dataclasses.dataclass
class ScoreStats:
    """What a scoring run did: for progress lines and benchmarks."""

    shape: ScoreShape | None = None
    examples: int = 0
    real_tokens: int = 0  # tokens of examples (excluding padding)
    slot_tokens: int = 0  # tokens the device processed (including padding)
    batches: int = 0
    seconds: float = 0.0

    @property
    def real_fraction(self) -> float:
        return self.real_tokens / max(self.slot_tokens, 1)

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / max(self.seconds, 1e-9)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D ("data",) mesh over `devices` (default: every device of every process); None for one."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), ("data",)) if len(devices) > 1 else None


def _put(value, sharding: NamedSharding, dtype) -> jax.Array:
    """A host or device array placed as `sharding` says (also on meshes spanning processes: a
    device array sharded over the same devices, e.g. fine-tuned parameters on the training mesh,
    is resharded on the devices, never through a host)."""
    if isinstance(value, jax.Array) and value.is_fully_addressable and sharding.is_fully_addressable:
        return jax.device_put(value.astype(dtype), sharding)
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.jit(lambda x: x.astype(dtype), out_shardings=sharding)(value)
    host = np.asarray(value).astype(dtype)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _combine_processes(gathered: list[np.ndarray], stats: "ScoreStats") -> tuple[list[np.ndarray], "ScoreStats"]:
    """Per-example results of every process (each example was scored by exactly one), summed."""
    from jax.experimental import multihost_utils

    counts = np.array([stats.examples, stats.real_tokens, stats.slot_tokens], np.int32)
    everything = multihost_utils.process_allgather(([g.astype(np.float32) for g in gathered], counts))
    gathered = [np.asarray(g, np.float64).sum(axis=0) for g in everything[0]]
    totals = np.asarray(everything[1], np.int64).sum(axis=0)
    stats.examples, stats.real_tokens, stats.slot_tokens = (int(t) for t in totals)
    return gathered, stats


class Scorer:
    """Scores lists of examples with one model's weights; steps are compiled once per
    (config, shape) and shared by every Scorer.

    params: the parameter tree (numpy or jax arrays) in `config.param_dtype`.
    mesh: optional; rows are split over its `data` axis, parameters are replicated. The mesh may
    span several processes: each then feeds and reads back only its own devices' rows.
    """

    def __init__(self, config: ModelConfig, params, mesh: Mesh | None = None):
        self.config = config
        self.mesh = mesh
        dtype = jnp.dtype(config.param_dtype)
        self._multiprocess = mesh is not None and any(d.process_index != jax.process_index()
                                                      for d in mesh.devices.flat)
        if mesh is not None:
            replicated = NamedSharding(mesh, P())
            self.params = jax.tree.map(lambda x: _put(x, replicated, dtype), params)
            self._row_sharding = NamedSharding(mesh, P("data"))
        else:
            self.params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
            self._row_sharding = None

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape["data"]

    def compiled_step(self, shape: ScoreShape, kind: str = "nll") -> Callable:
        return compiled_step(self.config, shape, kind, self.mesh)

    def local_rows(self, rows_per_batch: int) -> np.ndarray:
        """Positions (within a batch) of the rows this process's devices hold, ascending."""
        if not self._multiprocess:
            return np.arange(rows_per_batch)
        held = self._row_sharding.addressable_devices_indices_map((rows_per_batch, 1))
        return np.unique(np.concatenate([np.arange(rows_per_batch)[index[0]] for index in held.values()]))

    def _batches(self, examples: Sequence[ScoredPair], shape: ScoreShape, rows: list[list[int]]
                 ) -> Iterator[PackedRows]:
        local = self.local_rows(shape.rows_per_batch)
        for start in range(0, len(rows), shape.rows_per_batch):
            batch_rows = rows[start:start + shape.rows_per_batch]
            if self._multiprocess:
                batch_rows = [batch_rows[i] if i < len(batch_rows) else [] for i in local]
            yield materialize_rows(examples, batch_rows, shape.row_length, shape.max_segments,
                                   num_rows=len(local))

    def _put_rows(self, array: np.ndarray, rows_per_batch: int, local: np.ndarray) -> jax.Array:
        """This process's rows [len(local), ...] of a batch as the global [R, ...] array."""
        if not self._multiprocess:
            return jax.device_put(array, self._row_sharding)
        where = {int(row): i for i, row in enumerate(local)}
        shape = (rows_per_batch,) + array.shape[1:]

        def piece(index):
            rows = np.arange(rows_per_batch)[index[0]]
            return array[[where[int(r)] for r in rows]][(slice(None),) + tuple(index[1:])]

        return jax.make_array_from_callback(shape, self._row_sharding, piece)

    def _read_rows(self, out: jax.Array, local: np.ndarray) -> np.ndarray:
        """The rows of a step output that this process holds, [len(local), ...], in `local` order."""
        if not self._multiprocess:
            return np.asarray(out)
        where = {int(row): i for i, row in enumerate(local)}
        result = np.zeros((len(local),) + out.shape[1:], out.dtype)
        for shard in out.addressable_shards:
            rows = np.arange(out.shape[0])[shard.index[0]]
            result[[where[int(r)] for r in rows]] = np.asarray(shard.data)
        return result

    def _run(self, kind: str, examples: Sequence[ScoredPair], shape: ScoreShape | None, tokens_per_batch: int,
             progress: Callable[[ScoreStats], None] | None) -> tuple[list[np.ndarray], ScoreStats]:
        """Runs the `kind` step over packed batches; returns its [R, S, ...] outputs gathered per
        example ([N, ...] each, input order) and the run's statistics."""
        lengths = [len(ids) for ids, _ in examples]
        if shape is None:
            shape, rows = plan_batches(lengths, max(lengths, default=1), tokens_per_batch, self.num_devices)
        else:
            rows = first_fit_decreasing(lengths, shape.row_length, shape.max_segments)
        step = self.compiled_step(shape, kind)
        gathered: list[np.ndarray] = []
        stats = ScoreStats(shape=shape)
        start = time.perf_counter()
        local = self.local_rows(shape.rows_per_batch)

        def collect(batch: PackedRows, outputs) -> None:
            held = batch.example_index >= 0
            for k, out in enumerate(outputs):
                out = self._read_rows(out, local)
                if len(gathered) <= k:
                    gathered.append(np.zeros((len(examples),) + out.shape[2:], np.float64))
                gathered[k][batch.example_index[held]] = out[held]
            stats.examples += int(held.sum())
            stats.real_tokens += batch.num_real_tokens
            stats.slot_tokens += batch.tokens.size
            stats.batches += 1
            stats.seconds = time.perf_counter() - start
            if progress is not None:
                progress(stats)

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            batches = self._batches(examples, shape, rows)
            next_batch = pool.submit(next, batches, None)
            pending = None
            while (batch := next_batch.result()) is not None:
                next_batch = pool.submit(next, batches, None)
                arrays = (batch.tokens, batch.targets, batch.loss_mask, batch.segment_ids, batch.positions)
                if self._row_sharding is not None:
                    arrays = tuple(self._put_rows(a, shape.rows_per_batch, local) for a in arrays)
                outputs = step(self.params, *arrays)  # dispatched asynchronously
                if pending is not None:
                    collect(*pending)  # the previous batch's results, while this one runs
                pending = (batch, outputs)
            if pending is not None:
                collect(*pending)
        if self._multiprocess:
            gathered, stats = _combine_processes(gathered, stats)
        stats.seconds = time.perf_counter() - start
        return gathered, stats

    def score(self, examples: Sequence[ScoredPair], shape: ScoreShape | None = None, tokens_per_batch: int = 16384,
              progress: Callable[[ScoreStats], None] | None = None) -> tuple[np.ndarray, np.ndarray, ScoreStats]:
        """Mean NLL per scored token (float32 [N]) and scored-token counts (int32 [N]), input order.

        shape: a fixed batch shape (the same shape across calls never recompiles); by default one
        is planned from the examples' lengths and tokens_per_batch. An example with no scored
        token gets NaN and count 0.
        """
        if not len(examples):
            return np.zeros(0, np.float32), np.zeros(0, np.int32), ScoreStats(shape=shape)
        (nll_sum, count), stats = self._run("nll", examples, shape, tokens_per_batch, progress)
        mean, count = _mean_nll(nll_sum, count)
        return mean, count, stats

    def score_and_represent(self, examples: Sequence[ScoredPair], shape: ScoreShape | None = None,
                            tokens_per_batch: int = 16384, progress: Callable[[ScoreStats], None] | None = None
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, ScoreStats]:
        """`score` and `represent` from one forward pass: (mean NLL [N], scored tokens [N], mean
        final hidden state [N, D], last-token final hidden state [N, D], stats)."""
        if not len(examples):
            empty = np.zeros((0, self.config.hidden_size), np.float32)
            return (np.zeros(0, np.float32), np.zeros(0, np.int32), empty, empty.copy(), ScoreStats(shape=shape))
        (nll_sum, count, hidden_sum, tokens, last), stats = self._run("nll_embed", examples, shape,
                                                                      tokens_per_batch, progress)
        nll, count = _mean_nll(nll_sum, count)
        mean = (hidden_sum / np.maximum(tokens, 1)[:, None]).astype(np.float32)
        return nll, count, mean, last.astype(np.float32), stats

    def represent(self, examples: Sequence[ScoredPair], shape: ScoreShape | None = None,
                  tokens_per_batch: int = 16384, progress: Callable[[ScoreStats], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, ScoreStats]:
        """Each example's mean final hidden state over its tokens and its final hidden state at
        its last token: float32 [N, D] each, input order; one pass over packed batches."""
        if not len(examples):
            empty = np.zeros((0, self.config.hidden_size), np.float32)
            return empty, empty.copy(), ScoreStats(shape=shape)
        (hidden_sum, count, last), stats = self._run("embed", examples, shape, tokens_per_batch, progress)
        mean = (hidden_sum / np.maximum(count, 1)[:, None]).astype(np.float32)
        return mean, last.astype(np.float32), stats

    def embed(self, examples: Sequence[ScoredPair], shape: ScoreShape | None = None, tokens_per_batch: int = 16384,
              progress: Callable[[ScoreStats], None] | None = None) -> tuple[np.ndarray, ScoreStats]:
        """Mean final hidden state of each example's tokens, float32 [N, D], input order."""
        mean, _, stats = self.represent(examples, shape, tokens_per_batch, progress)
        return mean, stats


def _mean_nll(nll_sum_N: np.ndarray, count_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL per scored token float32 [N], NaN without one; scored tokens int32 [N])."""
    count = np.rint(count_N).astype(np.int32)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, nll_sum_N / np.maximum(count, 1), np.nan).astype(np.float32)
    return mean, count
