"""The MPT family (mosaicml/mpt-7b and its kind; transformers' native MptForCausalLM): its config.json
read into ModelConfig fields and written back, and what the decoder does not compute refused by name.

What transformers' MptForCausalLM computes (transformers/models/mpt/modeling_mpt.py), and so the
decoder for family "mpt":

  wte embedding [V, D]; per block: x + out_proj(attn(norm_1(x))), then + down_proj(gelu(up_proj(
  norm_2(.)))), GELU exact (erf); norm_f; logits with the tied embedding (lm_head is wte unless
  tie_word_embeddings=false). Every LayerNorm has a weight and no bias (transformers drops the bias
  whatever `no_bias` says), eps = layer_norm_epsilon. No linear layer has a bias. Wqkv [3 D, D] is
  q, k and v stacked (heads of D / n_heads each, as many key/value heads as query heads), clamped to
  +-clip_qkv when that is set; logits scaled by 1 / sqrt(head dim), plus ALiBi biases
  (models/alibi.py) for n_heads heads, softmax in fp32. The MLP is 4 D wide: transformers builds
  `4 * hidden_size` whatever expansion_ratio says.

Refused (ConfigError naming the field), because transformers ignores the field (so the two would
disagree on such a checkpoint) or the decoder does not compute it:
  no_bias=false, expansion_ratio other than 4, logit_scale set, norm_type other than (low precision)
  layernorm, ffn_config.ffn_type other than mptmlp, attn_config.alibi=false (learned position
  embeddings), attn_config.alibi_bias_max other than 8, attn_config.qk_ln=true,
  attn_config.softmax_scale set, attn_config.attn_type other than multihead_attention,
  attn_config.prefix_lm=true.
Ignored (nothing to compute in a forward pass, or done anyway): dropout rates, attn_impl,
init_device, init_config, use_cache, verbose, learned_pos_emb (unused with ALiBi),
embedding_fraction (a gradient scale of MPT's pre-training code), attn_uses_sequence_id (the
decoder always keeps packed examples apart).

The fused Wqkv is split into the decoder's q, k, v projections on import and joined on export
(models/hf_checkpoint.py).
"""

from typing import Any

from forgetting_jax.experiment.choices import ConfigError

ALIBI_BIAS_MAX = 8  # transformers' build_mpt_alibi_tensor default, the only value it uses
EXPANSION_RATIO = 4  # transformers' MptMLP width: 4 * hidden_size
NORM_TYPES = ("low_precision_layernorm", "layernorm")
DEFAULT_ATTN_CONFIG = {
    "attn_type": "multihead_attention", "attn_pdrop": 0, "attn_impl": "torch", "clip_qkv": None,
    "softmax_scale": None, "prefix_lm": False, "qk_ln": False, "attn_uses_sequence_id": False, "alibi": True,
    "alibi_bias_max": ALIBI_BIAS_MAX,
}


def _refuse(field: str, value: Any, why: str) -> None:
    raise ConfigError(f"mpt: config.json field {field}={value!r} is not supported: {why}")


def model_config_fields(hf: dict) -> dict:
    """ModelConfig keyword arguments (all but the dtypes) of an MPT config.json dict."""
    attn = dict(DEFAULT_ATTN_CONFIG, **(hf.get("attn_config") or {}))
    if not hf.get("no_bias", True):
        _refuse("no_bias", hf["no_bias"], "the decoder's MPT has no biases (nor has transformers' MptForCausalLM)")
    ratio = hf.get("expansion_ratio", EXPANSION_RATIO)
    if ratio != EXPANSION_RATIO:
        _refuse("expansion_ratio", ratio, "transformers' MptForCausalLM builds a 4 x d_model MLP whatever it says")
    if hf.get("logit_scale") is not None:
        _refuse("logit_scale", hf["logit_scale"], "logits are not scaled (transformers ignores the field)")
    norm = hf.get("norm_type", NORM_TYPES[0])
    if norm not in NORM_TYPES:
        _refuse("norm_type", norm, f"only {' or '.join(NORM_TYPES)} (transformers always uses LayerNorm)")
    ffn = (hf.get("ffn_config") or {}).get("ffn_type", "mptmlp")
    if ffn != "mptmlp":
        _refuse("ffn_config.ffn_type", ffn, "only mptmlp (up_proj, GELU, down_proj)")
    if not attn["alibi"]:
        _refuse("attn_config.alibi", attn["alibi"], "only ALiBi position biases (no learned position embeddings)")
    if attn["alibi_bias_max"] != ALIBI_BIAS_MAX:
        _refuse("attn_config.alibi_bias_max", attn["alibi_bias_max"],
                f"only {ALIBI_BIAS_MAX} (transformers ignores the field and always uses {ALIBI_BIAS_MAX})")
    if attn["qk_ln"]:
        _refuse("attn_config.qk_ln", attn["qk_ln"], "no LayerNorm on queries and keys (transformers has none)")
    if attn["softmax_scale"] is not None:
        _refuse("attn_config.softmax_scale", attn["softmax_scale"], "only the default 1 / sqrt(head dim)")
    if attn["attn_type"] != "multihead_attention":
        _refuse("attn_config.attn_type", attn["attn_type"], "only multihead_attention")
    if attn["prefix_lm"]:
        _refuse("attn_config.prefix_lm", attn["prefix_lm"], "only causal attention")
    try:
        d, heads = int(hf["d_model"]), int(hf["n_heads"])
        if d % heads:
            raise ConfigError(f"mpt: d_model {d} is not a multiple of n_heads {heads}")
        eos = hf.get("eos_token_id")
        return dict(
            family="mpt", vocab_size=int(hf["vocab_size"]), hidden_size=d, num_layers=int(hf["n_layers"]),
            num_heads=heads, num_kv_heads=heads, head_dim=d // heads, mlp_dim=EXPANSION_RATIO * d,
            norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), clip_qkv=attn["clip_qkv"] or None,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            max_position_embeddings=int(hf.get("max_seq_len", 2048)), bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos[0] if isinstance(eos, list) else eos, pad_token_id=hf.get("pad_token_id"))
    except KeyError as err:
        raise ConfigError(f"config.json lacks the field {err.args[0]!r}") from None


def check_model_config(config: Any) -> None:
    """What an MPT ModelConfig must be for transformers' MptForCausalLM to hold it (also one
    pre-trained from scratch: its export must load)."""
    c = config
    if c.num_kv_heads != c.num_heads:
        raise ConfigError(f"mpt: num_kv_heads {c.num_kv_heads} must equal num_heads {c.num_heads} "
                          "(MPT's Wqkv has as many key/value heads as query heads)")
    if c.num_heads * c.head_dim != c.hidden_size:
        raise ConfigError(f"mpt: num_heads x head_dim ({c.num_heads} x {c.head_dim}) must equal hidden_size "
                          f"{c.hidden_size}")
    if c.mlp_dim != EXPANSION_RATIO * c.hidden_size:
        raise ConfigError(f"mpt: mlp_dim {c.mlp_dim} must be {EXPANSION_RATIO} x hidden_size = "
                          f"{EXPANSION_RATIO * c.hidden_size} (transformers' MptMLP width)")
    if c.qkv_bias or c.out_bias or c.mlp_bias:
        raise ConfigError("mpt: no biases (no_bias=true)")
    if c.sliding_window is not None:
        raise ConfigError("mpt: no sliding window")
    if c.attention_impl == "cudnn":
        raise ConfigError("mpt: attention_impl=cudnn cannot add ALiBi biases (cuDNN's packed layout takes "
                          "no bias); use xla or auto (which picks xla for mpt)")


def hf_config_dict(config: Any, base: dict | None, dtype: str | None) -> dict:
    """config.json of an MPT model for MptForCausalLM; fields of `base` (an imported config.json) are
    kept, but for `auto_map` (MPT's remote code, which the export does not carry)."""
    hf = dict(base or {})
    for name in ("auto_map", "torch_dtype"):
        hf.pop(name, None)
    attn = dict(DEFAULT_ATTN_CONFIG, **(hf.get("attn_config") or {}))
    attn.update({"alibi": True, "alibi_bias_max": config.alibi_bias_max, "clip_qkv": config.clip_qkv,
                 "softmax_scale": None, "qk_ln": False, "attn_type": "multihead_attention", "prefix_lm": False})
    hf.update({
        "architectures": ["MptForCausalLM"], "model_type": "mpt", "vocab_size": config.vocab_size,
        "d_model": config.hidden_size, "n_heads": config.num_heads, "n_layers": config.num_layers,
        "expansion_ratio": config.mlp_dim // config.hidden_size, "max_seq_len": config.max_position_embeddings,
        "layer_norm_epsilon": config.norm_eps, "no_bias": True, "logit_scale": None, "attn_config": attn,
        "tie_word_embeddings": config.tie_embeddings, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
        "dtype": dtype or config.param_dtype,
    })
    return hf
