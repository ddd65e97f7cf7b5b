"""Hugging Face model directories <-> our parameter pytree, field by field and tensor by tensor.

Import reads config.json and model.safetensors (or a sharded model.safetensors.index.json) with
numpy only; export writes a directory that `transformers.AutoModelForCausalLM.from_pretrained`
loads. Both directions use one layout table per family, so they cannot drift apart.
"""

import dataclasses
import json
import os
import shutil
from typing import Callable

import jax
import ml_dtypes
import numpy as np

from forgetting_jax.models import mpt
from forgetting_jax.models.config import ConfigError, ModelConfig, load_hf_config
from forgetting_jax.models.decoder import param_shapes
from forgetting_jax.models.safetensors_io import SafetensorsFile, save_file
from forgetting_jax.utils.io import atomic_dir, write_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "chat_template.jinja", "added_tokens.json",
                   "generation_config.json")
_NP_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
              "float16": np.dtype(np.float16)}


class CheckpointError(ValueError):
    """A model directory that does not hold what its config promises."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter leaf: its path in our tree, its HF tensor name and how its layout differs.

    kind: "same" (identical layout), "linear" (HF [out, in] vs our [in..., out...]),
    "vector" (a reshape), "transpose" (lm_head [V, D] vs our [D, V]).
    `{i}` in hf_name is the layer index; per-layer leaves are stacked along our axis 0.
    """

    path: tuple[str, ...]
    hf_name: str
    kind: str

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


def layout(config: ModelConfig) -> list[Entry]:
    """Every parameter of `config`'s tree with its HF counterpart (GPT-NeoX's and MPT's fused q/k/v
    aside: `_fused_qkv_to_ours`, `_fused_qkv_to_hf`)."""
    E = Entry
    if config.family == "mpt":
        top, layer = "transformer.", "transformer.blocks.{i}."
        entries = [E(("embedding",), top + "wte.weight", "same"),
                   E(("final_norm", "scale"), top + "norm_f.weight", "same"),
                   E(("layers", "attn_norm", "scale"), layer + "norm_1.weight", "same"),
                   E(("layers", "mlp_norm", "scale"), layer + "norm_2.weight", "same")]
        for ours, theirs in ((("attn", "o"), "attn.out_proj"), (("mlp", "up"), "ffn.up_proj"),
                             (("mlp", "down"), "ffn.down_proj")):
            entries.append(E(("layers",) + ours + ("kernel",), layer + theirs + ".weight", "linear"))
        if not config.tie_embeddings:
            entries.append(E(("lm_head",), "lm_head.weight", "transpose"))
        return entries
    if config.family == "gpt_neox":
        top, layer = "gpt_neox.", "gpt_neox.layers.{i}."
        entries = [E(("embedding",), top + "embed_in.weight", "same"),
                   E(("final_norm", "scale"), top + "final_layer_norm.weight", "same"),
                   E(("final_norm", "bias"), top + "final_layer_norm.bias", "same")]
        for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
            entries += [E(("layers", ours, "scale"), layer + theirs + ".weight", "same"),
                        E(("layers", ours, "bias"), layer + theirs + ".bias", "same")]
        for ours, theirs in ((("attn", "o"), "attention.dense"), (("mlp", "up"), "mlp.dense_h_to_4h"),
                             (("mlp", "down"), "mlp.dense_4h_to_h")):
            entries += [E(("layers",) + ours + ("kernel",), layer + theirs + ".weight", "linear"),
                        E(("layers",) + ours + ("bias",), layer + theirs + ".bias", "vector")]
        if not config.tie_embeddings:
            entries.append(E(("lm_head",), "embed_out.weight", "transpose"))
        return entries

    top, layer = "model.", "model.layers.{i}."
    entries = [E(("embedding",), top + "embed_tokens.weight", "same")]
    if config.norm_kind == "rmsnorm":
        entries.append(E(("final_norm", "scale"), top + "norm.weight", "same"))
    projections = [(("attn", n), f"self_attn.{n}_proj", config.qkv_bias) for n in "qkv"]
    projections.append((("attn", "o"), "self_attn.o_proj", config.out_bias))
    projections += [(("mlp", n), f"mlp.{n}_proj", config.mlp_bias) for n in ("gate", "up", "down")]
    for ours, theirs, bias in projections:
        entries.append(E(("layers",) + ours + ("kernel",), layer + theirs + ".weight", "linear"))
        if bias:
            entries.append(E(("layers",) + ours + ("bias",), layer + theirs + ".bias", "vector"))
    if config.post_norm:
        entries += [E(("layers", "post_attn_norm", "scale"), layer + "post_attention_layernorm.weight", "same"),
                    E(("layers", "post_mlp_norm", "scale"), layer + "post_feedforward_layernorm.weight", "same")]
    elif config.norm_kind == "rmsnorm":
        entries += [E(("layers", "attn_norm", "scale"), layer + "input_layernorm.weight", "same"),
                    E(("layers", "mlp_norm", "scale"), layer + "post_attention_layernorm.weight", "same")]
    if config.qk_norm:
        entries += [E(("layers", "attn", "q_norm", "scale"), layer + "self_attn.q_norm.weight", "vector"),
                    E(("layers", "attn", "k_norm", "scale"), layer + "self_attn.k_norm.weight", "vector")]
    if not config.tie_embeddings:
        entries.append(E(("lm_head",), "lm_head.weight", "transpose"))
    return entries


def _to_ours(kind: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "linear":
        return array.T.reshape(shape)
    if kind == "transpose":
        return array.T
    return array.reshape(shape)


def _to_hf(kind: str, array: np.ndarray, in_ndim: int) -> np.ndarray:
    if kind == "linear":
        rows = int(np.prod(array.shape[:in_ndim]))
        return array.reshape(rows, -1).T
    if kind == "transpose":
        return array.T
    return array.reshape(-1) if array.ndim > 1 and kind == "vector" else array


def _linear_in_ndim(path: tuple[str, ...]) -> int:
    """Number of leading input axes of our kernel (o: heads, head_dim; others: one)."""
    return 2 if path[-2] == "o" else 1


class _TensorSource:
    """Tensors of a model directory by name, from one file or a sharded index."""

    def __init__(self, model_dir: str):
        index = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: no 'weight_map' object")
            for name, file in weight_map.items():
                self.where[name] = os.path.join(model_dir, file)
        elif os.path.isfile(single):
            self.files[single] = SafetensorsFile(single)
            self.where = {name: single for name in self.files[single].names()}
        else:
            bins = [n for n in os.listdir(model_dir) if n.endswith(".bin")]
            hint = " (only PyTorch .bin weights found: convert them to safetensors)" if bins else ""
            raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json{hint}")

    def names(self) -> set[str]:
        return set(self.where)

    def get(self, name: str) -> np.ndarray:
        if name not in self.where:
            raise KeyError(name)
        path = self.where[name]
        if path not in self.files:
            if not os.path.isfile(path):
                raise CheckpointError(f"{path}: listed in the index for {name!r} but missing")
            self.files[path] = SafetensorsFile(path)
        return self.files[path].get(name)

    def close(self):
        for f in self.files.values():
            f.close()


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def params_from_tensors(config: ModelConfig, get: Callable[[str], np.ndarray], names: set[str],
                        where: str = "checkpoint") -> dict:
    """Builds our numpy parameter tree (param_dtype) from HF tensors fetched by name."""
    shapes = param_shapes(config)
    dtype = _NP_DTYPES[config.param_dtype]
    L = config.num_layers

    def fetch(name: str) -> np.ndarray:
        if name not in names:
            raise CheckpointError(f"{where}: tensor {name!r} is missing")
        return np.asarray(get(name)).astype(np.float32)

    def check(array: np.ndarray, shape: tuple, name: str) -> np.ndarray:
        if array.shape != tuple(shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape {array.shape}, the config implies {shape}")
        return array.astype(dtype)

    def converted(kind: str, name: str, shape: tuple) -> np.ndarray:
        array = fetch(name)
        try:
            return _to_ours(kind, array, shape)
        except ValueError:
            raise CheckpointError(f"{where}: tensor {name!r} has shape {array.shape}, which does not fit the shape "
                                  f"{shape} that config.json implies (weights of another model size?)") from None

    params: dict = {}
    for entry in layout(config):
        shape = tuple(_get(shapes, entry.path).shape)
        if entry.per_layer:
            stacked = [converted(entry.kind, entry.hf_name.format(i=i), shape[1:]) for i in range(L)]
            _set(params, entry.path, check(np.stack(stacked), shape, entry.hf_name))
        else:
            _set(params, entry.path, check(converted(entry.kind, entry.hf_name, shape), shape, entry.hf_name))
    if config.family == "gpt_neox":
        N, H, D = config.num_heads, config.head_dim, config.hidden_size
        name = "gpt_neox.layers.{i}.attention.query_key_value"
        w = np.stack([converted("reshape", name.format(i=i) + ".weight", (N, 3, H, D)) for i in range(L)])
        b = np.stack([converted("reshape", name.format(i=i) + ".bias", (N, 3, H)) for i in range(L)])
        for j, part in enumerate("qkv"):
            _set(params, ("layers", "attn", part, "kernel"), w[:, :, j].transpose(0, 3, 1, 2).astype(dtype))
            _set(params, ("layers", "attn", part, "bias"), b[:, :, j].astype(dtype))
    if config.family == "mpt":  # Wqkv [3 D, D]: q, k, v stacked, each [N H, D]
        N, H, D = config.num_heads, config.head_dim, config.hidden_size
        name = "transformer.blocks.{i}.attn.Wqkv.weight"
        w_Lx3xNxHxD = np.stack([converted("reshape", name.format(i=i), (3, N, H, D)) for i in range(L)])
        for j, part in enumerate("qkv"):
            _set(params, ("layers", "attn", part, "kernel"), w_Lx3xNxHxD[:, j].transpose(0, 3, 1, 2).astype(dtype))
    return params


def params_to_tensors(config: ModelConfig, params: dict, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Our parameter tree -> HF tensor dict (numpy, in `dtype` or the param dtype)."""
    out_dtype = _NP_DTYPES[dtype or config.param_dtype]
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x), dtype=np.float32), params)
    tensors: dict[str, np.ndarray] = {}
    for entry in layout(config):
        array = _get(host, entry.path)
        in_ndim = _linear_in_ndim(entry.path) if entry.kind == "linear" else 0
        if entry.per_layer:
            for i in range(config.num_layers):
                tensors[entry.hf_name.format(i=i)] = _to_hf(entry.kind, array[i], in_ndim)
        else:
            tensors[entry.hf_name] = _to_hf(entry.kind, array, in_ndim)
    if config.family == "gpt_neox":
        N, H, D = config.num_heads, config.head_dim, config.hidden_size
        attn = host["layers"]["attn"]
        for i in range(config.num_layers):
            w = np.stack([attn[p]["kernel"][i].transpose(1, 2, 0) for p in "qkv"], axis=1)  # [N, 3, H, D]
            b = np.stack([attn[p]["bias"][i] for p in "qkv"], axis=1)  # [N, 3, H]
            name = f"gpt_neox.layers.{i}.attention.query_key_value"
            tensors[name + ".weight"] = w.reshape(N * 3 * H, D)
            tensors[name + ".bias"] = b.reshape(-1)
    if config.family == "mpt":
        N, H, D = config.num_heads, config.head_dim, config.hidden_size
        attn = host["layers"]["attn"]
        for i in range(config.num_layers):
            w_3xNxHxD = np.stack([attn[p]["kernel"][i].transpose(1, 2, 0) for p in "qkv"])
            tensors[f"transformer.blocks.{i}.attn.Wqkv.weight"] = w_3xNxHxD.reshape(3 * N * H, D)
    return {k: np.ascontiguousarray(v.astype(out_dtype)) for k, v in tensors.items()}


def load_hf_model(model_dir: str, param_dtype: str = "float32", dtype: str = "float32",
                  **overrides) -> tuple[ModelConfig, dict, dict]:
    """Reads a HF model directory: (ModelConfig, numpy parameter tree, raw config.json dict)."""
    config, hf = load_hf_config(model_dir, param_dtype=param_dtype, dtype=dtype, **overrides)
    source = _TensorSource(model_dir)
    try:
        names = source.names()
        if "tie_word_embeddings" not in hf and not config.tie_embeddings:
            head = "embed_out.weight" if config.family == "gpt_neox" else "lm_head.weight"
            if head not in names:
                config = config.replace(tie_embeddings=True)
        params = params_from_tensors(config, source.get, names, where=model_dir)
    except ConfigError:
        raise
    finally:
        source.close()
    return config, params, hf


def to_hf_config_dict(config: ModelConfig, base: dict | None = None, dtype: str | None = None) -> dict:
    """A config.json dict for `config`; fields of `base` (an imported config.json) are kept."""
    if config.family == "mpt":
        return mpt.hf_config_dict(config, base, dtype)
    hf = dict(base or {})
    family = config.family
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "olmo": "OlmoForCausalLM", "olmo2": "Olmo2ForCausalLM", "gpt_neox": "GPTNeoXForCausalLM"}[family]
    rope = {"rope_type": "default", "rope_theta": config.rope_theta, **dict(config.rope_scaling)}
    if config.rotary_dim is not None:
        rope["partial_rotary_factor"] = config.rotary_dim / config.head_dim
    hf.update({
        "architectures": [arch], "model_type": family, "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "intermediate_size": config.mlp_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_embeddings, "rope_parameters": rope,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id, "dtype": dtype or config.param_dtype,
    })
    hf.pop("rope_scaling", None)
    hf.pop("rope_theta", None)
    hf.pop("torch_dtype", None)
    if family == "gpt_neox":
        hf.update({"layer_norm_eps": config.norm_eps, "hidden_act": "gelu", "attention_bias": config.qkv_bias,
                   "use_parallel_residual": config.parallel_residual})
        hf.pop("rotary_pct", None)
        hf.pop("rotary_emb_base", None)
    else:
        hf.update({"num_key_value_heads": config.num_kv_heads, "hidden_act": "silu", "head_dim": config.head_dim})
        if family != "olmo":
            hf["rms_norm_eps"] = config.norm_eps
        if family in ("llama", "olmo", "olmo2"):
            hf["attention_bias"] = config.qkv_bias
        if family == "llama":
            hf["mlp_bias"] = config.mlp_bias
        if family == "olmo":
            hf["clip_qkv"] = config.clip_qkv
        if family == "mistral":
            hf["sliding_window"] = config.sliding_window
    return hf


def export_hf_model(out_dir: str, config: ModelConfig, params: dict, base_config: dict | None = None,
                    tokenizer_dir: str | None = None, dtype: str | None = None,
                    max_shard_bytes: int = 4 << 30) -> None:
    """Writes a HF model directory (config.json, safetensors, tokenizer files copied from tokenizer_dir).

    Built in a temporary sibling directory and renamed into place, so it is complete or absent.
    """
    tensors = params_to_tensors(config, params, dtype)
    with atomic_dir(out_dir) as tmp:
        write_json(os.path.join(tmp, "config.json"), to_hf_config_dict(config, base_config, dtype))
        shards, current, size = [], {}, 0
        for name in sorted(tensors):
            if current and size + tensors[name].nbytes > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[name] = tensors[name]
            size += tensors[name].nbytes
        shards.append(current)
        if len(shards) == 1:
            save_file(shards[0], os.path.join(tmp, "model.safetensors"), {"format": "pt"})
        else:
            weight_map = {}
            for k, shard in enumerate(shards):
                file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, os.path.join(tmp, file), {"format": "pt"})
                weight_map.update({name: file for name in shard})
            total = sum(t.nbytes for t in tensors.values())
            write_json(os.path.join(tmp, "model.safetensors.index.json"),
                       {"metadata": {"total_size": total}, "weight_map": weight_map})
        if tokenizer_dir:
            for name in TOKENIZER_FILES:
                src = os.path.join(tokenizer_dir, name)
                if os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(tmp, name))
