"""The attention kernel: XLA with a dense mask, or cuDNN flash attention on packed rows.

`ModelConfig.attention_impl` chooses:
  xla    jax.nn.dot_product_attention with the boolean mask [B, 1, L, L] (causal, within a segment);
         every backend, every shape.
  cudnn  cuDNN flash attention (GPU, bf16/fp16, head dim a multiple of 8) with the packed-row
         ("ragged") layout: each contiguous run of one segment id in a row is its own causal
         sequence, given by its start offset and length, so the mask is exact and never
         materialised. Padding (segment 0, at the end of a row) is a run of its own, which is
         exactly what the XLA mask does (padding attends only to padding). A sliding window is a
         mask this layout cannot take: such models use XLA. Nor can it add ALiBi biases (MPT):
         cudnn is refused for those, by name.
  auto   cudnn where it applies (a GPU backend, a supported dtype and head dim, no sliding window,
         no ALiBi)
         and a one-off probe on this device agrees with XLA (forward and gradients on a small
         packed batch); xla otherwise. On CPU and TPU, auto is xla. The environment variable
         FJ_ATTENTION=xla|cudnn overrides auto everywhere in a process (scoring included).

The cuDNN call needs a static bound on runs per row: min(L, MAX_RUNS). A row with more runs
(more than MAX_RUNS - 1 packed examples) is computed with XLA instead, by a `lax.cond` on the
batch, so results are exact for any packing (under vmap the condition becomes a select and both
kernels run; packing never makes more than 64 examples a row by default).
"""

import functools
import logging
import os
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.models import alibi
from forgetting_jax.models.config import ATTENTION_IMPLS as IMPLEMENTATIONS, ConfigError

log = logging.getLogger("forgetting_jax.models")

MAX_RUNS = 65  # 64 packed examples (the packers' default max_segments) plus the padding run
CUDNN_DTYPES = ("bfloat16", "float16")

Array = jax.Array


def attention_mask(segment_ids_BxL: Array, positions_BxL: Array, sliding_window: int | None) -> Array:
    """Boolean [B, 1, L, L]: causal, within one segment (padding, segment 0, sees only padding)."""
    same = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    idx = jnp.arange(segment_ids_BxL.shape[1])
    causal = idx[:, None] >= idx[None, :]
    mask = same & causal[None]
    if sliding_window is not None:
        delta = positions_BxL[:, :, None] - positions_BxL[:, None, :]
        mask = mask & (delta < sliding_window)
    return mask[:, None]


def segment_runs(segment_ids_BxL: Array, max_runs: int) -> tuple[Array, Array, Array]:
    """The contiguous runs of equal segment id in each row, in cuDNN's packed layout.

    Returns (lengths [B, M], starts [B, M + 1], num_runs [B]) with M = max_runs; absent entries
    are -1. Rows with more than M runs have their first M runs listed (see `num_runs`).
    """
    B, L = segment_ids_BxL.shape
    first = jnp.ones((B, 1), bool)
    boundary_BxL = jnp.concatenate([first, segment_ids_BxL[:, 1:] != segment_ids_BxL[:, :-1]], axis=1)
    num_runs_B = jnp.sum(boundary_BxL, axis=1, dtype=jnp.int32)
    starts_BxM = jax.vmap(lambda row: jnp.nonzero(row, size=max_runs, fill_value=-1)[0])(boundary_BxL)
    starts_BxM = starts_BxM.astype(jnp.int32)
    following_BxM = jnp.concatenate([starts_BxM[:, 1:], jnp.full((B, 1), -1, jnp.int32)], axis=1)
    ends_BxM = jnp.where(following_BxM >= 0, following_BxM, L)
    lengths_BxM = jnp.where(starts_BxM >= 0, ends_BxM - starts_BxM, -1)
    starts_BxM1 = jnp.concatenate([starts_BxM, jnp.full((B, 1), -1, jnp.int32)], axis=1)
    return lengths_BxM, starts_BxM1, num_runs_B


def runs_mask(lengths_BxM: Array, starts_BxM1: Array, length: int) -> Array:
    """The boolean mask [B, 1, L, L] that cuDNN's packed causal layout stands for (for tests)."""
    idx = jnp.arange(length)
    starts_BxM = starts_BxM1[:, :-1]
    ends_BxM = starts_BxM + lengths_BxM
    inside_BxMxL = (idx[None, None] >= starts_BxM[..., None]) & (idx[None, None] < ends_BxM[..., None])
    inside_BxMxL = inside_BxMxL & (starts_BxM[..., None] >= 0)
    same_BxLxL = jnp.einsum("bmq,bmk->bqk", inside_BxMxL.astype(jnp.int32), inside_BxMxL.astype(jnp.int32)) > 0
    causal = idx[:, None] >= idx[None, :]
    return (same_BxLxL & causal[None])[:, None]


# Choosing the kernel ---------------------------------------------------------------------------

def cudnn_unsupported(config: Any) -> str | None:
    """Why cuDNN cannot run this model here (None: it can)."""
    if jax.default_backend() != "gpu":
        return f"the backend is {jax.default_backend()}, not gpu"
    if config.dtype not in CUDNN_DTYPES:
        return f"compute dtype {config.dtype} (cuDNN takes {' or '.join(CUDNN_DTYPES)})"
    if config.head_dim % 8 or config.head_dim > 256:
        return f"head dim {config.head_dim} (cuDNN takes multiples of 8 up to 256)"
    return None


def resolve(config: Any) -> str:
    """"xla" or "cudnn" for this model on this backend (see the module docstring)."""
    impl = getattr(config, "attention_impl", "auto")
    if impl == "auto":
        impl = os.environ.get("FJ_ATTENTION", "auto")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention_impl {impl!r} is not one of {IMPLEMENTATIONS}")
    if getattr(config, "alibi", False):
        if impl == "cudnn":
            raise ConfigError(f"attention_impl=cudnn (or FJ_ATTENTION=cudnn) cannot run the {config.family} family: "
                              "cuDNN's packed layout takes no ALiBi bias; use xla or auto")
        return "xla"
    if impl == "xla" or config.sliding_window is not None:
        return "xla"
    reason = cudnn_unsupported(config)
    if impl == "cudnn":
        if reason is not None:
            raise ValueError(f"attention_impl=cudnn cannot run here: {reason}")
        return "cudnn"
    if reason is not None:
        return "xla"
    return "cudnn" if probe(config.num_heads, config.num_kv_heads, config.head_dim, config.dtype) else "xla"


@functools.lru_cache(maxsize=None)
def probe(num_heads: int, num_kv_heads: int, head_dim: int, dtype: str) -> bool:
    """True when cuDNN's packed causal attention agrees with XLA on this device (forward and
    gradients, bf16 tolerances) for a small packed batch of these head shapes. Runs once per shape
    and process, eagerly, also when first asked while a step is being traced: the probe runs in a
    thread of its own, whose JAX trace state is fresh (tracing contexts are thread-local)."""
    outcome: dict = {}

    def target():
        try:
            outcome["ok"] = _probe(num_heads, num_kv_heads, head_dim, jnp.dtype(dtype))
        except Exception as err:  # noqa: BLE001 -- any failure to compile or run means: use XLA
            outcome["error"] = err

    thread = threading.Thread(target=target, name="cudnn-attention-probe", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        err = outcome["error"]
        message = (str(err).strip().splitlines() or [repr(err)])[0][:200]
        log.warning("cuDNN attention is unavailable for heads %d/%d x %d in %s (%s: %s); using XLA attention",
                    num_heads, num_kv_heads, head_dim, dtype, type(err).__name__, message)
        return False
    return bool(outcome.get("ok"))


def _probe(num_heads: int, num_kv_heads: int, head_dim: int, dtype) -> bool:
    """Raises unless cuDNN matches XLA; every array is an argument of the compiled functions
    (cuDNN's custom-partitioned call takes no closed-over constants)."""
    B, L = 2, 256
    segments = np.zeros((B, L), np.int32)
    segments[0, :100], segments[0, 100:180], segments[0, 180:250] = 1, 2, 3  # 6 padding tokens
    segments[1, :256] = 1
    rng = np.random.default_rng(0)
    q, k, v, cotangent = (jnp.asarray(rng.standard_normal((B, L, n, head_dim), np.float32), dtype)
                          for n in (num_heads, num_kv_heads, num_kv_heads, num_heads))
    segment_ids = jnp.asarray(segments)
    scale = head_dim ** -0.5

    def with_cudnn(q, k, v, segment_ids):
        lengths, starts, _ = segment_runs(segment_ids, 8)
        return cudnn_packed(q, k, v, lengths, starts, scale)

    def with_xla(q, k, v, segment_ids):
        mask = attention_mask(segment_ids, None, None)
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation="xla")

    def loss(fn, q, k, v, segment_ids, cotangent):
        return jnp.sum(fn(q, k, v, segment_ids).astype(jnp.float32) * cotangent.astype(jnp.float32))

    results = []
    for fn in (with_cudnn, with_xla):
        out = jax.jit(fn)(q, k, v, segment_ids)
        grads = jax.jit(jax.grad(functools.partial(loss, fn), argnums=(0, 1, 2)))(q, k, v, segment_ids, cotangent)
        results.append([np.asarray(x, np.float32) for x in (out, *grads)])
    for got, want in zip(*results):
        if not np.all(np.isfinite(got)):
            raise FloatingPointError("non-finite values")
        tolerance = 0.05 * max(float(np.abs(want).max()), 1.0)
        if float(np.abs(got - want).max()) > tolerance:
            raise ArithmeticError(f"differs from XLA by {float(np.abs(got - want).max()):.3g}")
    return True


# The kernels -----------------------------------------------------------------------------------

def cudnn_packed(q_BxLxNxH: Array, k_BxLxKxH: Array, v_BxLxKxH: Array, lengths_BxM: Array, starts_BxM1: Array,
                 scale: float) -> Array:
    """cuDNN flash attention, causal within each run given by (lengths, starts)."""
    from jax._src.cudnn.fused_attention_stablehlo import MaskType, dot_product_attention

    return dot_product_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, None, None, lengths_BxM, lengths_BxM,
                                 starts_BxM1, starts_BxM1, scale=scale, mask_type=MaskType.PADDING_CAUSAL,
                                 qkv_layout="BTNH")


def attention_inputs(config: Any, segment_ids_BxL: Array, positions_BxL: Array) -> dict:
    """What every layer's attention needs, computed once per call of the decoder: the XLA mask
    (and the ALiBi inputs of `alibi.bias`, for config.alibi), or cuDNN's segment runs."""
    if resolve(config) == "xla":
        inputs = {"mask": attention_mask(segment_ids_BxL, positions_BxL, config.sliding_window)}
        if getattr(config, "alibi", False):
            inputs["alibi"] = alibi.inputs(config.num_heads, config.alibi_bias_max, positions_BxL)
        return inputs
    L = segment_ids_BxL.shape[1]
    max_runs = min(L, MAX_RUNS)
    lengths, starts, num_runs = segment_runs(segment_ids_BxL, max_runs)
    inputs = {"lengths": lengths, "starts": starts}
    if L > max_runs:
        inputs["fits"] = jnp.all(num_runs <= max_runs)
        inputs["segment_ids"] = segment_ids_BxL
    return inputs


def attend(q_BxLxNxH: Array, k_BxLxKxH: Array, v_BxLxKxH: Array, inputs: dict, scale: float) -> Array:
    """Grouped-query attention [B, L, N, H] with the kernel `attention_inputs` chose."""
    if "mask" in inputs:
        bias_BxNxLxL = alibi.bias(inputs["alibi"]) if "alibi" in inputs else None
        return jax.nn.dot_product_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, bias=bias_BxNxLxL, mask=inputs["mask"],
                                            scale=scale)

    def cudnn():
        return cudnn_packed(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, inputs["lengths"], inputs["starts"], scale)

    if "fits" not in inputs:
        return cudnn()

    def xla():
        mask = attention_mask(inputs["segment_ids"], None, None)
        return jax.nn.dot_product_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, mask=mask, scale=scale,
                                            implementation="xla")

    return jax.lax.cond(inputs["fits"], cudnn, xla)
