"""Model configuration: one decoder, switches per family, read from a Hugging Face config.json.

Families and what they switch on:
  llama, mistral, qwen2  RMSNorm before attention and MLP, gated SiLU MLP, rotary on the whole head;
                         qwen2 adds q/k/v biases, mistral may add a sliding window.
  olmo                   non-parametric LayerNorm (no weight, no bias), optional clip_qkv.
  olmo2                  RMSNorm after attention and after the MLP (on the branch output), RMSNorm on
                         the full q and k projections.
  gpt_neox               LayerNorm with bias, parallel residual, fused QKV, partial rotary, GELU MLP.
  mpt                    LayerNorm with weight only, no biases, fused QKV, ALiBi biases instead of
                         rotary (models/alibi.py), GELU MLP, tied embeddings; config.json read by
                         models/mpt.py, which refuses what the decoder does not compute.
"""

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import numpy as np

from forgetting_jax.experiment.choices import ATTENTION_IMPLS, DTYPES, FAMILIES, ConfigError  # noqa: F401 (exported)
from forgetting_jax.models import mpt


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every setting of the decoder. Hashable, so it can be a static jit argument."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rotary_dim: int | None = None  # None: the whole head
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) pairs of HF rope scaling
    clip_qkv: float | None = None
    sliding_window: int | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype of matrix products and activations
    remat_policy: str = "none"  # none | full | dots | dots_no_batch
    scan_unroll: int = 1
    logits_chunks: int = 4  # the vocabulary projection runs over this many token chunks
    attention_impl: str = "auto"  # auto | xla | cudnn (see models/attention.py)
    family_flags: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) family-specific switches

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"family {self.family!r} is not one of {FAMILIES}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"{name} {getattr(self, name)!r} is not one of {DTYPES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"attention_impl {self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
        if self.rotary_dim is not None and (self.rotary_dim % 2 or self.rotary_dim > self.head_dim):
            raise ConfigError(f"rotary_dim {self.rotary_dim} must be even and at most {self.head_dim}")
        if self.family == "mpt":
            mpt.check_model_config(self)

    # Derived switches -------------------------------------------------------------------------
    @property
    def norm_kind(self) -> str:
        return {"olmo": "layernorm_nonparam", "gpt_neox": "layernorm", "mpt": "layernorm_scale"}.get(
            self.family, "rmsnorm")

    @property
    def post_norm(self) -> bool:
        """OLMo-2: normalise each branch's output instead of its input."""
        return self.family == "olmo2"

    @property
    def qk_norm(self) -> bool:
        return self.family == "olmo2"

    @property
    def parallel_residual(self) -> bool:
        return self.family == "gpt_neox" and dict(self.family_flags).get("use_parallel_residual", True)

    @property
    def gated_mlp(self) -> bool:
        return self.family not in ("gpt_neox", "mpt")

    @property
    def activation(self) -> str:
        return "silu" if self.gated_mlp else "gelu"

    @property
    def alibi(self) -> bool:
        """ALiBi biases on the attention logits (models/alibi.py) instead of rotary embeddings."""
        return self.family == "mpt"

    @property
    def alibi_bias_max(self) -> float:
        return dict(self.family_flags).get("alibi_bias_max", mpt.ALIBI_BIAS_MAX)

    @property
    def rope_dim(self) -> int:
        return self.head_dim if self.rotary_dim is None else self.rotary_dim

    @property
    def num_params(self) -> int:
        d, f, v = self.hidden_size, self.mlp_dim, self.vocab_size
        attn = d * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = d * f * (3 if self.gated_mlp else 2)
        embed = v * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * (attn + mlp) + embed

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def inv_freq(self) -> np.ndarray:
        """Rotary inverse frequencies [rope_dim / 2], float32, exactly as transformers builds them."""
        dim = self.rope_dim
        inv_freq = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
        inv_freq = inv_freq.astype(np.float32)
        scaling = dict(self.rope_scaling)
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            return inv_freq
        if kind == "linear":
            return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
        if kind == "llama3":
            factor = scaling["factor"]
            low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
            old_len = scaling["original_max_position_embeddings"]
            low_wavelen, high_wavelen = old_len / low, old_len / high
            wavelen = 2 * math.pi / inv_freq
            scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
            smooth = (old_len / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        raise ConfigError(f"rope scaling type {kind!r} is not supported (default, linear, llama3 are)")


def _rope_settings(hf: dict, head_dim: int) -> tuple[float, int | None, tuple]:
    """Rotary theta, rotary dim and scaling from either the v5 `rope_parameters` or older fields."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    factor = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    rotary_dim = None if factor == 1.0 else int(head_dim * factor)
    scaling = {k: v for k, v in {**legacy, **params}.items()
               if k not in ("rope_theta", "partial_rotary_factor")}
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = {}
    return float(theta), rotary_dim, tuple(sorted(scaling.items()))


def from_hf_dict(hf: dict, param_dtype: str = "float32", dtype: str = "float32", **overrides) -> ModelConfig:
    """Builds a ModelConfig from the dict of a Hugging Face config.json."""
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise ConfigError(f"model_type {family!r} is not supported; supported: {', '.join(FAMILIES)}")
    if family == "mpt":
        fields = mpt.model_config_fields(hf)
        config = ModelConfig(**fields, param_dtype=param_dtype, dtype=dtype)
        return config.replace(**overrides) if overrides else config
    try:
        d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        head_dim = int(hf.get("head_dim") or d // heads)
        theta, rotary_dim, scaling = _rope_settings(hf, head_dim)
        eps = hf.get("layer_norm_eps") if family == "gpt_neox" else hf.get("rms_norm_eps")
        bias = bool(hf.get("attention_bias", family == "gpt_neox"))
        sliding = hf.get("sliding_window") if family == "mistral" or hf.get("use_sliding_window") else None
        if family == "qwen2" and hf.get("use_sliding_window"):
            raise ConfigError("qwen2 with use_sliding_window=true is not supported")
        extra = {}
        if family == "gpt_neox":
            extra["use_parallel_residual"] = bool(hf.get("use_parallel_residual", True))
            if hf.get("hidden_act", "gelu") != "gelu":
                raise ConfigError(f"gpt_neox hidden_act {hf.get('hidden_act')!r} is not supported (gelu is)")
        elif hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act {hf.get('hidden_act')!r} is not supported for {family} (silu is)")
        eos = hf.get("eos_token_id")
        config = ModelConfig(
            family=family,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=d,
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            mlp_dim=int(hf["intermediate_size"]),
            norm_eps=float(eps if eps is not None else (1e-5 if family in ("olmo", "gpt_neox") else 1e-6)),
            rope_theta=theta,
            rotary_dim=rotary_dim,
            rope_scaling=scaling,
            clip_qkv=hf.get("clip_qkv") if family == "olmo" else None,
            sliding_window=int(sliding) if sliding else None,
            qkv_bias=True if family == "qwen2" else bias,
            out_bias=False if family == "qwen2" else bias,
            mlp_bias=True if family == "gpt_neox" else bool(hf.get("mlp_bias", False)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            pad_token_id=hf.get("pad_token_id"),
            param_dtype=param_dtype,
            dtype=dtype,
            family_flags=tuple(sorted(extra.items())),
        )
    except KeyError as err:
        raise ConfigError(f"config.json lacks the field {err.args[0]!r}") from None
    return config.replace(**overrides) if overrides else config


def load_hf_config(model_dir: str, **kwargs) -> tuple[ModelConfig, dict]:
    """Reads `model_dir/config.json`; returns (ModelConfig, the raw dict kept for export)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no config.json (is {model_dir!r} a Hugging Face model directory?)")
    with open(path, encoding="utf-8") as f:
        try:
            hf = json.load(f)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    try:
        return from_hf_dict(hf, **kwargs), hf
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def scan_unroll(model: Any, num_layers: int, backend: str | None = None) -> int:
    """Layers per iteration of the layer scan: 1 (scanned) or num_layers (unrolled).

    model: experiment.ModelSettings, or a mapping (the ConfigDict config.model). scan_layers True / False decides; None
    (the default) unrolls on GPUs, where the unrolled stack trained 1.38x faster than the scanned
    one (an H200, BENCHMARKS.md), and scans elsewhere (one compiled layer body: faster compiles on
    CPUs and TPUs). backend: jax's backend name (None: jax.default_backend()).
    """
    scan = model.get("scan_layers") if isinstance(model, Mapping) else getattr(model, "scan_layers", None)
    if scan is None:
        import jax

        scan = (backend or jax.default_backend()) != "gpu"
    return 1 if scan else int(num_layers)
