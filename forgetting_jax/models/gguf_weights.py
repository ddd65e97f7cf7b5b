"""A GGUF file's architecture and tensors as a Hugging Face config dict and state dict, in numpy.

GGUF (llama.cpp's format) stores each tensor under its own name, quantized block-wise (Q4_0,
Q4_1, Q8_0, K-quants, ...), with the model's settings as `<arch>.*` metadata. The `gguf` package
(llama.cpp's reader, numpy only) maps the file and dequantizes; this module renames the tensors
to the Hugging Face layout and undoes the one layout change llama.cpp makes: for the llama
family its converter permutes the rows of the q and k projections from HF's half-split rotary
layout into interleaved pairs, so they are permuted back here. Supported architectures: llama
(and mistral, which GGUF files call llama) and qwen2; others are refused by name.
"""

import numpy as np

from forgetting_jax.models.hf_checkpoint import CheckpointError

GGUF_EXTRA = "pip install 'forgetting_jax[gguf]'"
ARCHITECTURES = ("llama", "qwen2")


class GgufError(CheckpointError):
    """A GGUF file this converter cannot read, naming the file and what is wrong."""


def import_gguf():
    """The `gguf` package, or a GgufError naming the extra that installs it."""
    try:
        import gguf
    except ImportError:
        raise GgufError(f"reading a .gguf model needs the `gguf` package: {GGUF_EXTRA}") from None
    return gguf


def open_reader(path: str):
    """gguf.GGUFReader of `path` (memory-mapped), with a GgufError for a file that is not GGUF."""
    gguf = import_gguf()
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as err:
        raise GgufError(f"{path}: not a readable GGUF file ({err})") from None


def field(reader, key: str, default=None):
    """The value of metadata field `key` (str, number or list), or `default` when absent."""
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def hf_config(reader, path: str) -> dict:
    """The Hugging Face config.json dict the file's metadata describes (float32 weights)."""
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise GgufError(f"{path}: general.architecture {arch!r} is not supported; supported: "
                        f"{', '.join(ARCHITECTURES)}")

    def need(key):
        value = field(reader, f"{arch}.{key}")
        if value is None:
            raise GgufError(f"{path}: metadata field {arch}.{key} is missing")
        return value

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    kv_heads = int(field(reader, f"{arch}.attention.head_count_kv", heads))
    head_dim = int(field(reader, f"{arch}.attention.key_length", 0) or field(reader, f"{arch}.rope.dimension_count", 0)
                   or hidden // heads)
    names = {t.name for t in reader.tensors}
    vocab = field(reader, f"{arch}.vocab_size")
    if vocab is None:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else None
    if vocab is None:
        raise GgufError(f"{path}: neither {arch}.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size")
    theta = float(field(reader, f"{arch}.rope.freq_base", 10000.0))
    if field(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise GgufError(f"{path}: rope scaling {field(reader, f'{arch}.rope.scaling.type')!r} is not supported")
    config = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(field(reader, f"{arch}.context_length", 2048)),
        "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": theta,
        "rope_parameters": {"rope_theta": theta, "rope_type": "default"},
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id"),
    }
    if arch == "llama":
        config.update(attention_bias="blk.0.attn_q.bias" in names, mlp_bias=False)
    return config


_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}


def hf_name(name: str) -> str | None:
    """The Hugging Face name of GGUF tensor `name` (None for tensors HF does not keep, such as
    llama.cpp's precomputed rope frequencies)."""
    if name in _TOP:
        return _TOP[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER:
        return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}.{parts[3]}"
    return None


def unpermute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k permutation: per head, rows (pair, 2) back to HF's (2, half).

    w: [heads * head_dim, ...] (a weight [rows, D] or a bias [rows]).
    """
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(reader, config: dict, path: str):
    """Yields (hf_name, float32 array in HF layout) for every tensor of the file."""
    gguf = import_gguf()
    llama = config["model_type"] == "llama"
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None:
            if tensor.name == "rope_freqs.weight":
                continue
            raise GgufError(f"{path}: tensor {tensor.name!r} has no Hugging Face counterpart")
        try:
            array = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        except NotImplementedError as err:
            raise GgufError(f"{path}: tensor {tensor.name}: quantization {tensor.tensor_type.name} "
                            f"cannot be dequantized ({err})") from None
        expected = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest axis first
        array = array.reshape(expected)
        if llama and tensor.name.endswith(("attn_q.weight", "attn_q.bias")):
            array = unpermute_rotary(array, config["num_attention_heads"])
        elif llama and tensor.name.endswith(("attn_k.weight", "attn_k.bias")):
            array = unpermute_rotary(array, config["num_key_value_heads"])
        yield name, np.ascontiguousarray(array)
