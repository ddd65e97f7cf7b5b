"""The decoder: embeddings, a scan over identical layers, a final norm.

`Decoder.__call__` returns final hidden states [B, L, D] in the compute dtype; the vocabulary
projection is left to `lm_head.token_nll` (chunked, fp32 logsumexp) or `lm_head.logits`, so no
caller ever needs the full [B, L, V] logits. Layer parameters are stacked along a leading
`layers` axis (one compiled layer body, whatever the depth).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from forgetting_jax.models import alibi
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.attention import attention_inputs
from forgetting_jax.models.layers import Attention, Mlp, dtype_of, make_norm, partitioned_param, rotary_tables

Array = jax.Array

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class DecoderLayer(nn.Module):
    """One block; pre-norm, post-norm (OLMo-2) or parallel residual (GPT-NeoX)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: Array, cos_sin: tuple[Array, Array], attn_inputs: dict,
                 kv_cache: dict | None = None):
        """(output [B, L, D], this layer's updated KV cache, or None without one)."""
        c = self.config
        attn_module, mlp = Attention(c, name="attn"), Mlp(c, name="mlp")
        updated = []

        def attn(x):
            if kv_cache is None:
                return attn_module(x, cos_sin, attn_inputs)
            out, cache = attn_module(x, cos_sin, attn_inputs, kv_cache)
            updated.append(cache)
            return out

        if c.post_norm:
            h = x_BxLxD + make_norm(c, "post_attn_norm")(attn(x_BxLxD))
            out = h + make_norm(c, "post_mlp_norm")(mlp(h))
        elif c.parallel_residual:
            out = x_BxLxD + attn(make_norm(c, "attn_norm")(x_BxLxD)) + mlp(make_norm(c, "mlp_norm")(x_BxLxD))
        else:
            h = x_BxLxD + attn(make_norm(c, "attn_norm")(x_BxLxD))
            out = h + mlp(make_norm(c, "mlp_norm")(h))
        out = nn.with_logical_constraint(out, ("activation_batch", "activation_length", "activation_embed"))
        return out, (updated[0] if updated else None)


class Decoder(nn.Module):
    """tokens [B, L] (+ positions, segment ids) -> final hidden states [B, L, D]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxL: Array, positions_BxL: Array | None = None,
                 segment_ids_BxL: Array | None = None, cache: dict | None = None):
        """Final hidden states [B, L, D]; with a KV cache, (hidden states, the updated cache).

        cache (greedy decoding, models/generate.py): {"k", "v": [layers, B, S, K, H] in the compute
        dtype, "index": int32 scalar, the slot of the first of these L tokens, "pad": int32 [B],
        the left padding of each row}. Slot s of row b holds the token at position s - pad[b]
        (slots before pad[b] are padding); positions_BxL and segment_ids_BxL are then ignored.
        Each token attends to the valid slots up to its own (and within the sliding window); ALiBi
        distances (config.alibi) are between these positions.
        """
        c = self.config
        if cache is not None:
            return self._cached(tokens_BxL, cache)
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
        if segment_ids_BxL is None:
            segment_ids_BxL = jnp.ones_like(tokens_BxL)
        x_BxLxD = self._embed(tokens_BxL)
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("activation_batch", "activation_length", "activation_embed"))
        cos_sin = rotary_tables(c, positions_BxL)
        attn_inputs = attention_inputs(c, segment_ids_BxL, positions_BxL)

        layer = DecoderLayer
        if c.remat_policy != "none":
            layer = nn.remat(layer, prevent_cse=False, policy=REMAT_POLICIES[c.remat_policy])
        layers = nn.scan(
            layer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=c.num_layers,
            unroll=c.scan_unroll,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(c, name="layers")
        x_BxLxD, _ = layers(x_BxLxD, cos_sin, attn_inputs)
        return self._finish(x_BxLxD)

    def _embed(self, tokens_BxL: Array) -> Array:
        c = self.config
        embedding_VxD = partitioned_param(self, "embedding", (c.vocab_size, c.hidden_size), ("vocab", "embed"),
                                          nn.initializers.normal(stddev=1.0), c)
        return jnp.take(embedding_VxD, tokens_BxL, axis=0).astype(dtype_of(c.dtype))

    def _finish(self, x_BxLxD: Array) -> Array:
        c = self.config
        x_BxLxD = make_norm(c, "final_norm")(x_BxLxD)
        if not c.tie_embeddings:
            partitioned_param(self, "lm_head", (c.hidden_size, c.vocab_size), ("embed", "vocab"),
                   nn.initializers.normal(stddev=c.hidden_size ** -0.5), c)
        return x_BxLxD

    def _cached(self, tokens_BxL: Array, cache: dict):
        """The KV-cache path of `__call__`: each layer reads its cached keys and values and returns
        those of these L tokens ([layers, B, L, K, H] out of the scan), written into the cache at
        slots [index, index + L) once, after the layers (in place inside the decode loop)."""
        c = self.config
        B, L = tokens_BxL.shape
        S = cache["k"].shape[2]
        index, pad_B = cache["index"], cache["pad"]
        slots_S = jnp.arange(S)
        new_L = jnp.arange(L)
        query_slots_L = index + new_L
        positions_BxL = jnp.maximum(query_slots_L[None, :] - pad_B[:, None], 0)
        x_BxLxD = self._embed(tokens_BxL)
        cos_sin = rotary_tables(c, positions_BxL)
        # earlier slots: real tokens (not left padding) before this call's first slot
        cache_BxLxS = jnp.broadcast_to(((slots_S[None, :] >= pad_B[:, None]) & (slots_S[None, :] < index))[:, None, :],
                                       (B, L, S))
        # this call's tokens: causal among themselves, padding never seen, each token sees itself
        real_BxL = query_slots_L[None, :] >= pad_B[:, None]
        new_BxLxL = real_BxL[:, None, :] & (new_L[None, :, None] >= new_L[None, None, :])
        if c.sliding_window is not None:
            key_positions_BxS = slots_S[None, :] - pad_B[:, None]
            cache_BxLxS = cache_BxLxS & ((positions_BxL[:, :, None] - key_positions_BxS[:, None, :]) < c.sliding_window)
            new_BxLxL = new_BxLxL & ((positions_BxL[:, :, None] - positions_BxL[:, None, :]) < c.sliding_window)
        new_BxLxL = new_BxLxL | (new_L[:, None] == new_L[None, :])[None]
        attn_inputs = {"cache": cache_BxLxS, "new": new_BxLxL}
        if c.alibi:
            attn_inputs["alibi"] = alibi.cached_inputs(c.num_heads, c.alibi_bias_max, positions_BxL,
                                                       slots_S[None, :] - pad_B[:, None])
        layers = nn.scan(
            DecoderLayer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, 0),
            length=c.num_layers,
            unroll=c.scan_unroll,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(c, name="layers")
        x_BxLxD, kv = layers(x_BxLxD, cos_sin, attn_inputs, {"k": cache["k"], "v": cache["v"]})
        kv = {name: jax.lax.dynamic_update_slice(cache[name], kv[name], (0, 0, index, 0, 0)) for name in ("k", "v")}
        return self._finish(x_BxLxD), {"k": kv["k"], "v": kv["v"], "index": index + L, "pad": pad_B}


def unembedding(params: dict, config: ModelConfig) -> Array:
    """The output projection [D, V] (the transposed embedding when tied)."""
    if config.tie_embeddings:
        return params["embedding"].T
    return params["lm_head"]


def init_params(config: ModelConfig, rng: Array, length: int = 8):
    """Random parameters (unboxed pytree) and their logical axis names (same tree of PartitionSpecs)."""
    model = Decoder(config)
    tokens = jnp.zeros((1, length), jnp.int32)
    boxed = model.init(rng, tokens)["params"]
    return nn.unbox(boxed), nn.get_partition_spec(boxed)


def logical_axes(config: ModelConfig):
    """The tree of logical PartitionSpecs of the parameters, without allocating them."""
    boxed = jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    return nn.get_partition_spec(boxed["params"])


def param_shapes(config: ModelConfig):
    """The tree of ShapeDtypeStructs of the parameters."""
    boxed = jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    return nn.unbox(boxed["params"])
