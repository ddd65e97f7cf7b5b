"""Building blocks of the decoder: norms, rotary embeddings, attention, MLP (ALiBi: models/alibi.py).

Shapes: B batch, L length, D model width, N query heads, K key/value heads, H head dim, F MLP width.
Every parameter is created with logical axis names (embed, heads, kv_heads, head_dim, mlp, vocab;
the decoder adds layers) that a rule table maps onto a device mesh.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from forgetting_jax.models import alibi
from forgetting_jax.models.attention import attend
from forgetting_jax.models.config import ModelConfig

Array = jax.Array


def dtype_of(name: str):
    return jnp.dtype(name)


def _lead(p: Array, ndim: int) -> Array:
    """Adds leading unit axes so that `p` broadcasts against an array of rank `ndim`."""
    return p.reshape((1,) * (ndim - p.ndim) + p.shape)


def partitioned_param(module: nn.Module, name: str, shape: tuple, axes: tuple, init, config: ModelConfig):
    """A parameter of `module` in config.param_dtype, annotated with its logical axes (sharding)."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype_of(config.param_dtype))


class Norm(nn.Module):
    """RMSNorm, LayerNorm with weight and bias (layernorm), with a weight only (layernorm_scale: MPT)
    or without either (layernorm_nonparam: OLMo); fp32 inside.

    Normalises over the trailing `len(features)` axes (OLMo-2's q/k norm spans every head).
    """

    config: ModelConfig
    features: tuple[int, ...]
    axes: tuple[str, ...]
    kind: str = "rmsnorm"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtype = x.dtype
        reduce = tuple(range(x.ndim - len(self.features), x.ndim))
        x32 = x.astype(jnp.float32)
        eps = self.config.norm_eps
        if self.kind == "rmsnorm":
            scale = partitioned_param(self, "scale", self.features, self.axes, nn.initializers.ones, self.config)
            y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=reduce, keepdims=True) + eps)
            return (_lead(scale.astype(jnp.float32), y.ndim) * y).astype(dtype)
        mean = jnp.mean(x32, axis=reduce, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=reduce, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + eps)
        if self.kind in ("layernorm", "layernorm_scale"):
            scale = partitioned_param(self, "scale", self.features, self.axes, nn.initializers.ones, self.config)
            y = y * _lead(scale.astype(jnp.float32), y.ndim)
        if self.kind == "layernorm":
            bias = partitioned_param(self, "bias", self.features, self.axes, nn.initializers.zeros, self.config)
            y = y + _lead(bias.astype(jnp.float32), y.ndim)
        return y.astype(dtype)


def make_norm(config: ModelConfig, name: str) -> Norm:
    return Norm(config, (config.hidden_size,), ("norm",), config.norm_kind, name=name)


class Dense(nn.Module):
    """x @ kernel (+ bias) over the trailing `len(in_features)` axes of x, in the compute dtype."""

    config: ModelConfig
    in_features: tuple[int, ...]
    out_features: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtype = dtype_of(self.config.dtype)
        fan_in = 1
        for n in self.in_features:
            fan_in *= n
        init = nn.initializers.normal(stddev=fan_in ** -0.5)
        kernel = partitioned_param(self, "kernel", self.in_features + self.out_features,
                        self.in_axes + self.out_axes, init, self.config)
        n_in = len(self.in_features)
        contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
        y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), (contract, ((), ())))
        if self.use_bias:
            bias = partitioned_param(self, "bias", self.out_features, self.out_axes, nn.initializers.zeros, self.config)
            y = y + _lead(bias.astype(dtype), y.ndim)
        return y


def rotary_tables(config: ModelConfig, positions_BxL: Array) -> tuple[Array, Array]:
    """cos and sin [B, L, R] (R = rotary dims) in fp32, as transformers computes them."""
    inv_freq = jnp.asarray(config.inv_freq())
    freqs_BxLxR2 = positions_BxL.astype(jnp.float32)[..., None] * inv_freq[None, None, :]
    emb_BxLxR = jnp.concatenate([freqs_BxLxR2, freqs_BxLxR2], axis=-1)
    return jnp.cos(emb_BxLxR), jnp.sin(emb_BxLxR)


def apply_rotary(x_BxLxNxH: Array, cos_BxLxR: Array, sin_BxLxR: Array) -> Array:
    """Rotates the first R dims of every head (rotate-half convention); the rest pass through."""
    dtype = x_BxLxNxH.dtype
    rot = cos_BxLxR.shape[-1]
    cos = cos_BxLxR.astype(dtype)[:, :, None, :]
    sin = sin_BxLxR.astype(dtype)[:, :, None, :]
    x_rot, x_pass = x_BxLxNxH[..., :rot], x_BxLxNxH[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    out = x_rot * cos + rotated * sin
    if x_pass.shape[-1]:
        out = jnp.concatenate([out, x_pass], axis=-1)
    return out.astype(dtype)


def cached_attention(q_BxLxNxH: Array, k_BxLxKxH: Array, v_BxLxKxH: Array, k_BxSxKxH: Array, v_BxSxKxH: Array,
                     masks: dict, scale: float) -> Array:
    """Grouped-query attention of L new tokens over the S cached slots and over themselves, in fp32:
    one softmax over both key sets (masks["cache"] [B, L, S], masks["new"] [B, L, L]), so that the
    cache is only read (the caller writes the new keys and values into it once per step). With
    masks["alibi"] (`alibi.cached_inputs`), the ALiBi biases are added to the logits."""
    B, L, N, H = q_BxLxNxH.shape
    K = k_BxLxKxH.shape[2]
    q = q_BxLxNxH.reshape(B, L, K, N // K, H).astype(jnp.float32) * scale
    old_BxKxGxLxS = jnp.einsum("blkgh,bskh->bkgls", q, k_BxSxKxH.astype(jnp.float32))
    new_BxKxGxLxL = jnp.einsum("blkgh,bmkh->bkglm", q, k_BxLxKxH.astype(jnp.float32))
    if "alibi" in masks:
        slopes_N = masks["alibi"]["slopes"]
        old_BxKxGxLxS = old_BxKxGxLxS + alibi.grouped(slopes_N, masks["alibi"]["cache"], K)
        new_BxKxGxLxL = new_BxKxGxLxL + alibi.grouped(slopes_N, masks["alibi"]["new"], K)
    neg = jnp.finfo(jnp.float32).min
    old_BxKxGxLxS = jnp.where(masks["cache"][:, None, None], old_BxKxGxLxS, neg)
    new_BxKxGxLxL = jnp.where(masks["new"][:, None, None], new_BxKxGxLxL, neg)
    top = jnp.maximum(old_BxKxGxLxS.max(-1, keepdims=True), new_BxKxGxLxL.max(-1, keepdims=True))
    p_old, p_new = jnp.exp(old_BxKxGxLxS - top), jnp.exp(new_BxKxGxLxL - top)
    total = p_old.sum(-1, keepdims=True) + p_new.sum(-1, keepdims=True)
    out = (jnp.einsum("bkgls,bskh->blkgh", p_old / total, v_BxSxKxH.astype(jnp.float32))
           + jnp.einsum("bkglm,bmkh->blkgh", p_new / total, v_BxLxKxH.astype(jnp.float32)))
    return out.reshape(B, L, N, H).astype(q_BxLxNxH.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention with rotary embeddings (or ALiBi biases: config.alibi, the
    rotary tables then unused) and exact segment masks; the kernel (XLA or cuDNN) is
    `config.attention_impl`, resolved by `models.attention`."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: Array, cos_sin: tuple[Array, Array], attn_inputs: dict,
                 kv_cache: dict | None = None):
        """Attention output [B, L, D]; with `kv_cache` ({"k", "v"}: [B, S, K, H], the keys and
        values of earlier slots; see `cached_attention`) also these L tokens' keys and values
        ({"k", "v"}: [B, L, K, H]), for the caller to write into the cache."""
        c = self.config
        D, N, K, H = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        q = Dense(c, (D,), (N, H), ("embed",), ("heads", "head_dim"), c.qkv_bias, name="q")(x_BxLxD)
        k = Dense(c, (D,), (K, H), ("embed",), ("kv_heads", "head_dim"), c.qkv_bias, name="k")(x_BxLxD)
        v = Dense(c, (D,), (K, H), ("embed",), ("kv_heads", "head_dim"), c.qkv_bias, name="v")(x_BxLxD)
        if c.qk_norm:
            q = Norm(c, (N, H), ("heads", "head_dim"), "rmsnorm", name="q_norm")(q)
            k = Norm(c, (K, H), ("kv_heads", "head_dim"), "rmsnorm", name="k_norm")(k)
        if c.clip_qkv is not None:
            q, k, v = (jnp.clip(t, -c.clip_qkv, c.clip_qkv) for t in (q, k, v))
        if not c.alibi:
            q = apply_rotary(q, *cos_sin)
            k = apply_rotary(k, *cos_sin)
        q = nn.with_logical_constraint(q, ("activation_batch", "activation_length", "activation_heads", None))
        if kv_cache is not None:
            out_BxLxNxH = cached_attention(q, k, v, kv_cache["k"], kv_cache["v"], attn_inputs, H ** -0.5)
            out = Dense(c, (N, H), (D,), ("heads", "head_dim"), ("embed",), c.out_bias, name="o")(out_BxLxNxH)
            dtype = kv_cache["k"].dtype
            return out, {"k": k.astype(dtype), "v": v.astype(dtype)}
        out_BxLxNxH = attend(q, k, v, attn_inputs, scale=H ** -0.5)
        return Dense(c, (N, H), (D,), ("heads", "head_dim"), ("embed",), c.out_bias, name="o")(out_BxLxNxH)


class Mlp(nn.Module):
    """Gated SiLU MLP (down(silu(gate x) * up x)) or GELU MLP (GPT-NeoX, MPT: down(gelu(up x)), exact GELU)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: Array) -> Array:
        c = self.config
        D, F = c.hidden_size, c.mlp_dim
        up = Dense(c, (D,), (F,), ("embed",), ("mlp",), c.mlp_bias, name="up")(x_BxLxD)
        if c.gated_mlp:
            gate = Dense(c, (D,), (F,), ("embed",), ("mlp",), c.mlp_bias, name="gate")(x_BxLxD)
            h = jax.nn.silu(gate) * up
        else:
            h = jax.nn.gelu(up, approximate=False)
        h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
        return Dense(c, (F,), (D,), ("mlp",), ("embed",), c.mlp_bias, name="down")(h)
