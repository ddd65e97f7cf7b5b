"""Vocabulary projection with per-token NLL in fp32, computed in token chunks.

Only one chunk of logits [T / C, V] exists at a time (recomputed in the backward pass), so the
full [B, L, V] logits are never materialised, in fp32 or otherwise.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def logits(hidden_BxLxD: Array, unembed_DxV: Array) -> Array:
    """Full fp32 logits [B, L, V]; for tests and small inputs only."""
    dtype = hidden_BxLxD.dtype
    return jnp.einsum("bld,dv->blv", hidden_BxLxD, unembed_DxV.astype(dtype),
                      preferred_element_type=jnp.float32)


def token_nll(hidden_BxLxD: Array, unembed_DxV: Array, targets_BxL: Array, num_chunks: int = 4) -> Array:
    """-log p(target) per position, fp32 [B, L]; logits of each chunk in fp32 via logsumexp."""
    B, L, D = hidden_BxLxD.shape
    T = B * L
    num_chunks = max(1, min(num_chunks, T))
    pad = (-T) % num_chunks
    h_TxD = hidden_BxLxD.reshape(T, D)
    t_T = targets_BxL.reshape(T)
    if pad:
        h_TxD = jnp.pad(h_TxD, ((0, pad), (0, 0)))
        t_T = jnp.pad(t_T, (0, pad))
    h_CxTcxD = h_TxD.reshape(num_chunks, -1, D)
    t_CxTc = t_T.reshape(num_chunks, -1)
    w_DxV = unembed_DxV.astype(hidden_BxLxD.dtype)

    @jax.checkpoint
    def chunk_nll(args):
        h_TcxD, t_Tc = args
        logits_TcxV = jnp.dot(h_TcxD, w_DxV, preferred_element_type=jnp.float32)
        lse_Tc = jax.nn.logsumexp(logits_TcxV, axis=-1)
        target_Tc = jnp.take_along_axis(logits_TcxV, t_Tc[:, None], axis=-1)[:, 0]
        return lse_Tc - target_Tc

    nll_CxTc = jax.lax.map(chunk_nll, (h_CxTcxD, t_CxTc))
    return nll_CxTc.reshape(-1)[:T].reshape(B, L)
