"""ALiBi attention biases (the MPT family): a per-head linear penalty on the distance to each key.

  bias[b, n, q, k] = slope[n] * (position[b, k] - position[b, q])    (<= 0 for every key q sees)

added to the scaled attention logits before the mask and the softmax, in fp32. The slopes are
those of transformers' `build_mpt_alibi_tensor` (MPT's own code): for the power of two P >= N
heads, slope_j = 2^(-j * bias_max / P), j = 1..P; when P != N, the odd-numbered slopes then the
even-numbered ones, the first N of them.

transformers adds slope * (k - (K - 1)) (it depends on the key index k alone, K keys); the softmax
of a query is unchanged by a constant per query, so that bias and this one give the same
attention. Here every distance is measured between positions within a segment: a packed example
(segment ids, positions restarting at each segment) attends exactly as it does alone, and in the
KV-cache path (models/decoder.py `Decoder._cached`) a left-padded row as an unpadded one.

Shapes: B batch, L queries, S cached key slots, N heads.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

DEFAULT_BIAS_MAX = 8


def slopes(num_heads: int, bias_max: float = DEFAULT_BIAS_MAX) -> np.ndarray:
    """The per-head slopes [N], float32, computed as transformers' `build_mpt_alibi_tensor` does."""
    power = 2 ** math.ceil(math.log2(num_heads))
    base = np.arange(1, power + 1, dtype=np.int64).astype(np.float32) * np.float32(bias_max / power)
    slopes_P = (np.float32(1.0) / np.power(np.float32(2.0), base, dtype=np.float32)).astype(np.float32)
    if power != num_heads:
        slopes_P = np.concatenate([slopes_P[1::2], slopes_P[::2]])[:num_heads]
    return slopes_P


def inputs(num_heads: int, bias_max: float, positions_BxL: Array) -> dict:
    """What `bias` needs, computed once per decoder call: {"slopes": [N], "positions": [B, L]}, fp32."""
    return {"slopes": jnp.asarray(slopes(num_heads, bias_max)), "positions": positions_BxL.astype(jnp.float32)}


def bias(alibi_inputs: dict) -> Array:
    """The additive bias [B, N, L, L] (fp32) of the uncached attention: slope * (key - query position)."""
    positions_BxL = alibi_inputs["positions"]
    delta_BxLxL = positions_BxL[:, None, :] - positions_BxL[:, :, None]
    return alibi_inputs["slopes"][None, :, None, None] * delta_BxLxL[:, None]


def cached_inputs(num_heads: int, bias_max: float, query_positions_BxL: Array, key_positions_BxS: Array) -> dict:
    """The distances of the KV-cache path (`layers.cached_attention`): {"slopes": [N], "cache": key
    position of each cached slot minus the query's [B, L, S], "new": the same among the L new
    tokens [B, L, L]}, fp32 (slots that the masks hide get whatever value)."""
    q_BxL = query_positions_BxL.astype(jnp.float32)
    k_BxS = key_positions_BxS.astype(jnp.float32)
    return {"slopes": jnp.asarray(slopes(num_heads, bias_max)),
            "cache": k_BxS[:, None, :] - q_BxL[:, :, None],
            "new": q_BxL[:, None, :] - q_BxL[:, :, None]}


def grouped(slopes_N: Array, delta_BxLxS: Array, num_kv_heads: int) -> Array:
    """slope * distance [B, K, G, L, S] for logits laid out by key/value head K and group G (N = K G)."""
    slopes_KxG = slopes_N.reshape(num_kv_heads, -1)
    return slopes_KxG[None, :, :, None, None] * delta_BxLxS[:, None, None]
