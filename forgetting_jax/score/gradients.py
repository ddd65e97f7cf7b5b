"""Per-example loss gradients of a model, randomly projected to P dimensions (TRAK-style).

An example's loss is its mean fp32 NLL over its scored tokens (mask[t]: token t is predicted
from tokens < t; for upstream examples the tokens the scorer scores, for a task's training
examples its trained tokens); an example with no scored token has loss 0 and gradient 0. The
gradient is taken w.r.t. every parameter, held in float32 (the master weights) while the
matrix products run in the config's compute dtype.

One compiled call handles a batch of R rows [R, L], one example per row, L the longest example
rounded up to 64 and R a multiple of the mesh's data devices (the last batch is padded with empty
rows, dropped on the host): `jax.vmap(jax.grad(loss))` over the rows, rows sharded over the
mesh's `data` axis, parameters replicated, so N examples cost ceil(N / R) calls.

The projection of a gradient g (every leaf, flattened) to P dimensions, never a [G, P] matrix:

  rademacher   (default; the final code's TRAK CudaProjector) R g / sqrt(P) with R a dense
               +-1 matrix. Each parameter leaf (keyed by its path in the tree) is cut into blocks
               of `block_size(P)` coordinates (the last one shorter); block b's [C, P] signs are
               the bits of jax.random.bits(fold_in(fold_in(key(seed), crc32(path)), b), [C, P/32])
               (32 signs per word), generated inside the call and multiplied with that block of
               the batch's gradients, so memory is bounded by one block.
  countsketch  each coordinate added, with a random sign, to one of P buckets (the same keys:
               one word per coordinate, bit 0 the sign, the others the bucket); O(G) work.

Both give E[<Rg, Rh>] = <g, h>, and an example's projection depends only on its gradient, the
seed, P and the kind (never on its batch, its position in it, R or the mesh). `projection_spec`
names all of it for fingerprints. (The final code's TRAK vectors are unscaled, sqrt(P) times
these: its score <v, v'> / P is these vectors' plain inner product.)
"""

import dataclasses
import math
import time
import zlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from forgetting_jax.data.packing import materialize_rows
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import Decoder, unembedding
from forgetting_jax.models.lm_head import token_nll

PROJECTION_VERSION = 1  # of what a projection is: part of `projection_spec`
KINDS = ("rademacher", "countsketch")
BLOCK_ENTRIES = 2 ** 25  # entries of one block's random [C, P] signs (128 MiB in float32)
GRADIENT_FLOATS = 2 ** 28  # per device, where its memory is unknown: the [rows, G] float32 gradients of a call
GRADIENT_MEMORY = 0.25  # else this fraction of a device's memory
CHUNK_TOKENS = 8192  # tokens per vocabulary-projection chunk of one call


def block_size(dim: int) -> int:
    """Coordinates per projection block for P = dim: BLOCK_ENTRIES // P, within [256, 2^20]."""
    return int(max(256, min(2 ** 20, BLOCK_ENTRIES // max(int(dim), 1))))


def projection_spec(dim: int, seed: int = 0, kind: str = "rademacher") -> dict:
    """Everything that defines the projection (for fingerprints): kind, P, seed, block size,
    PROJECTION_VERSION and JAX's PRNG (threefry; its partitionable mode changes the bits)."""
    if kind not in KINDS:
        raise ValueError(f"projection kind {kind!r}: not one of {', '.join(KINDS)}")
    prng = "threefry2x32" + ("-partitionable" if jax.config.jax_threefry_partitionable else "")
    return {"kind": kind, "dim": int(dim), "seed": int(seed), "block": block_size(dim), "prng": prng,
            "version": PROJECTION_VERSION}


def leaf_key(seed: int | jax.Array, path: tuple) -> jax.Array:
    """The key of a parameter leaf: fold_in(key(seed), crc32 of its path in the tree, 31 bits)."""
    name = jax.tree_util.keystr(path).encode("utf-8")
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name) & 0x7FFFFFFF)


def _rademacher_block(g_BxC: jax.Array, key: jax.Array, dim: int) -> jax.Array:
    """g_BxC @ S_CxP with S the block's +-1 signs (32 per random word): [B, P]."""
    C = g_BxC.shape[1]
    words = -(-dim // 32)
    bits_CxW = jax.random.bits(key, (C, words), jnp.uint32)
    shifts_1x1x32 = jnp.arange(32, dtype=jnp.uint32)[None, None, :]
    bit_CxWx32 = (bits_CxW[:, :, None] >> shifts_1x1x32) & jnp.uint32(1)
    signs_CxP = (bit_CxWx32.astype(jnp.float32) * 2.0 - 1.0).reshape(C, words * 32)[:, :dim]
    return jnp.dot(g_BxC, signs_CxP, precision=jax.lax.Precision.HIGHEST)


def _countsketch_block(g_BxC: jax.Array, key: jax.Array, dim: int) -> jax.Array:
    """Each coordinate of the block added, with its sign, to its bucket: [B, P]."""
    B, C = g_BxC.shape
    bits_C = jax.random.bits(key, (C,), jnp.uint32)
    bucket_C = ((bits_C >> 1) % jnp.uint32(dim)).astype(jnp.int32)
    sign_C = (bits_C & jnp.uint32(1)).astype(jnp.float32) * 2.0 - 1.0
    return jnp.zeros((B, dim), jnp.float32).at[:, bucket_C].add(g_BxC * sign_C[None, :])


_BLOCKS = {"rademacher": _rademacher_block, "countsketch": _countsketch_block}


def project_leaf(g_Bxn: jax.Array, key: jax.Array, dim: int, kind: str = "rademacher") -> jax.Array:
    """The unscaled projection [B, P] of one leaf's flattened gradients [B, n], block by block
    (a loop over the full blocks, then the shorter last one)."""
    B, n = g_Bxn.shape
    block, project_block = block_size(dim), _BLOCKS[kind]
    full, rest = divmod(n, block)
    out_BxP = jnp.zeros((B, dim), jnp.float32)
    if full:
        def body(b, acc_BxP):
            g_BxC = jax.lax.dynamic_slice_in_dim(g_Bxn, b * block, block, axis=1)
            return acc_BxP + project_block(g_BxC, jax.random.fold_in(key, b), dim)

        out_BxP = jax.lax.fori_loop(0, full, body, out_BxP)
    if rest:
        out_BxP = out_BxP + project_block(g_Bxn[:, full * block:], jax.random.fold_in(key, full), dim)
    return out_BxP


def project(grads: Any, dim: int, seed: int | jax.Array = 0, kind: str = "rademacher") -> jax.Array:
    """The projections [B, P] of a batch of gradients (a tree of [B, ...] leaves); traceable (the
    seed too)."""
    leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
    B = leaves[0][1].shape[0]
    out_BxP = jnp.zeros((B, dim), jnp.float32)
    for path, leaf in leaves:
        out_BxP = out_BxP + project_leaf(leaf.reshape(B, -1).astype(jnp.float32), leaf_key(seed, path), dim, kind)
    return out_BxP / math.sqrt(dim) if kind == "rademacher" else out_BxP


def flatten(grads: Any) -> jax.Array:
    """A batch of gradient trees ([B, ...] leaves) as [B, G] (leaves in tree order)."""
    leaves = jax.tree.leaves(grads)
    return jnp.concatenate([x.reshape(x.shape[0], -1).astype(jnp.float32) for x in leaves], axis=1)


def unflatten(flat_G: np.ndarray, params: Any) -> Any:
    """One flattened gradient [G] (`flatten`'s order) as a tree shaped like `params`."""
    leaves, treedef = jax.tree.flatten(params)
    sizes = np.cumsum([0] + [int(np.size(x)) for x in leaves])
    parts = [np.asarray(flat_G[a:b]).reshape(np.shape(x)) for a, b, x in zip(sizes[:-1], sizes[1:], leaves)]
    return jax.tree.unflatten(treedef, parts)


def make_gradient_step(config: ModelConfig, num_chunks: int, dim: int | None, kind: str = "rademacher") -> Callable:
    """step(params, seed, tokens, targets, loss_mask, segment_ids, positions), rows [R, L] of one
    example each, seed a uint32 scalar -> the projected per-row gradients [R, P] (dim None:
    unprojected, [R, G])."""
    model = Decoder(config)

    def loss(params, tokens_L, targets_L, mask_L, segment_ids_L, positions_L):
        hidden_1xLxD = model.apply({"params": params}, tokens_L[None], positions_L[None], segment_ids_L[None])
        nll_1xL = token_nll(hidden_1xLxD, unembedding(params, config), targets_L[None], num_chunks)
        mask_1xL = mask_L[None]
        count = jnp.sum(mask_1xL.astype(jnp.float32))
        return jnp.sum(jnp.where(mask_1xL, nll_1xL, 0.0)) / jnp.maximum(count, 1.0)

    per_row = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, 0, 0, 0))

    def step(params, seed, tokens_RxL, targets_RxL, loss_mask_RxL, segment_ids_RxL, positions_RxL):
        grads = per_row(params, tokens_RxL, targets_RxL, loss_mask_RxL, segment_ids_RxL, positions_RxL)
        return flatten(grads) if dim is None else project(grads, dim, seed, kind)

    return step


_COMPILED: dict[tuple, Callable] = {}


def compiled_gradient_step(config: ModelConfig, num_chunks: int, dim: int | None, kind: str,
                           mesh: Mesh | None) -> Callable:
    """The jitted step (one per config, P, kind and mesh, whatever the seed; each batch shape
    compiles once): rows sharded over the mesh's data axis, parameters and the result replicated."""
    key = (config, num_chunks, dim, kind, mesh)
    if key not in _COMPILED:
        kwargs = {}
        if mesh is not None:
            rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
            kwargs = dict(in_shardings=(replicated, replicated) + (rows,) * 5, out_shardings=replicated)
        _COMPILED[key] = jax.jit(make_gradient_step(config, num_chunks, dim, kind), **kwargs)
    return _COMPILED[key]


@dataclasses.dataclass
class GradientStats:
    """What a gradient pass did: for progress lines and benchmarks."""

    rows_per_batch: int = 0
    row_length: int = 0
    examples: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        return self.examples / max(self.seconds, 1e-9)


def num_parameters(params: Any) -> int:
    """G: the number of parameter entries."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def gradient_floats() -> int:
    """float32 gradient entries one device may hold in a call: GRADIENT_MEMORY of its memory (as
    jax reports it), GRADIENT_FLOATS where it reports none (CPU)."""
    try:
        limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # a backend without memory statistics
        limit = None
    return int(GRADIENT_MEMORY * limit) // 4 if limit else GRADIENT_FLOATS


def plan_rows(n: int, row_length: int, num_params: int, devices: int = 1, tokens_per_batch: int = 16384) -> int:
    """Rows per call for n examples: at most tokens_per_batch // row_length, and per device at
    most `gradient_floats()` // G (at least one), balanced over the calls, a multiple of
    `devices`. More rows per call amortize the projection's random signs, generated once a call."""
    per_device = max(1, gradient_floats() // max(num_params, 1))
    most = max(1, min(tokens_per_batch // row_length, per_device * devices))
    calls = max(1, -(-n // most))
    rows = max(1, -(-n // calls))
    return -(-rows // devices) * devices


def _place(value, sharding: NamedSharding | None, dtype=None) -> jax.Array:
    """A host or device array, on `sharding` (None: the default device), from every process's
    full copy (a mesh over several processes takes each process's own pieces)."""
    if sharding is None:
        return jnp.asarray(value, dtype)
    if isinstance(value, jax.Array) and value.is_fully_addressable and sharding.is_fully_addressable:
        return jax.device_put(value if dtype is None else value.astype(dtype), sharding)  # no copy when placed
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.jit(lambda x: x.astype(dtype or x.dtype), out_shardings=sharding)(value)
    host = np.asarray(value) if dtype is None else np.asarray(value).astype(dtype)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _fetch(out: jax.Array) -> np.ndarray:
    """A replicated result on the host (one addressable copy when it spans processes)."""
    return np.asarray(out if out.is_fully_addressable else out.addressable_data(0))


def _pair(example) -> tuple[np.ndarray, np.ndarray]:
    return example.pair if hasattr(example, "pair") else (example[0], example[1])


def projected_gradients(model: Any, params: Any, examples: Sequence, dim: int | None, seed: int = 0,
                        mesh: Mesh | None = None, rows_per_batch: int | None = None, kind: str = "rademacher",
                        row_length: int | None = None, tokens_per_batch: int = 16384,
                        progress: Callable[[GradientStats], None] | None = None) -> np.ndarray:
    """Each example's projected loss gradient, float32 [n, P], input order (dim None: the
    unprojected gradients [n, G], leaves in tree order; `unflatten` makes one a tree; small
    models only).

    model: a score.scorer.Scorer (its config, and its params and mesh unless given) or a
    ModelConfig. params: the parameter tree (cast to float32). examples: data.records.Example or
    (ids_T, mask_T) pairs. rows_per_batch: rows per call (a multiple of the mesh's data devices;
    default `plan_rows`). row_length: at least this many tokens per row (one shape for several
    passes); rounded up to 64 and to the longest example. progress(stats) after each call.
    """
    if dim is not None:
        projection_spec(dim, seed, kind)  # checks the kind
    if not isinstance(model, ModelConfig):  # a Scorer
        params = model.params if params is None else params
        mesh = model.mesh if mesh is None else mesh
        model = model.config
    config = model.replace(param_dtype="float32")
    pairs = [_pair(e) for e in examples]
    width = num_parameters(params) if dim is None else int(dim)
    if not pairs:
        return np.zeros((0, width), np.float32)
    devices = 1 if mesh is None else int(mesh.shape["data"])
    longest = max(len(ids) for ids, _ in pairs)
    length = -(-max(longest, int(row_length or 1)) // 64) * 64
    rows = rows_per_batch or plan_rows(len(pairs), length, num_parameters(params), devices, tokens_per_batch)
    if rows % devices:
        raise ValueError(f"rows_per_batch={rows} is not a multiple of the mesh's {devices} data devices")
    replicated = None if mesh is None else NamedSharding(mesh, P())
    row_sharding = None if mesh is None else NamedSharding(mesh, P("data"))
    params = jax.tree.map(lambda x: _place(x, replicated, np.float32), params)
    step = compiled_gradient_step(config, max(1, rows * length // CHUNK_TOKENS), None if dim is None else int(dim),
                                  kind, mesh)
    seed_array = _place(np.asarray(seed, np.uint32), replicated)
    out = np.zeros((len(pairs), width), np.float32)
    stats = GradientStats(rows, length)
    start = time.perf_counter()

    def collect(first: int, result: jax.Array) -> None:
        count = min(rows, len(pairs) - first)
        out[first:first + count] = _fetch(result)[:count]
        stats.examples += count
        stats.batches += 1
        stats.seconds = time.perf_counter() - start
        if progress is not None:
            progress(stats)

    pending = None
    for first in range(0, len(pairs), rows):
        members = [[i] for i in range(first, min(first + rows, len(pairs)))]
        batch = materialize_rows(pairs, members, length, 1, num_rows=rows)
        arrays = (batch.tokens, batch.targets, batch.loss_mask, batch.segment_ids, batch.positions)
        result = step(params, seed_array, *(_place(a, row_sharding) for a in arrays))  # dispatched asynchronously
        if pending is not None:
            collect(*pending)  # the previous batch's results, while this one runs
        pending = (first, result)
    collect(*pending)
    return out
