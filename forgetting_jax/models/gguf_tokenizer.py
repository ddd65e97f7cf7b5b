"""A GGUF file's tokenizer as a Hugging Face fast tokenizer (the `tokenizers` library, no torch).

GGUF stores the vocabulary (`tokenizer.ggml.tokens`, already in the byte-level alphabet for
BPE vocabularies), the merges, each token's type (3: control, 4: user-defined), the special
token ids, the chat template, and `tokenizer.ggml.pre`: the name of the pre-tokenizer the merges
were learned with. Byte-level BPE (`tokenizer.ggml.model = gpt2`) is rebuilt here with the
pre-tokenizer each name stands for in llama.cpp; SmolLM's (`smollm`) splits digits one by one
before GPT-2's byte-level split, as the original tokenizer.json does. Other tokenizer models
and unknown pre-tokenizer names are refused by name.
"""

from forgetting_jax.models.gguf_weights import GgufError, field

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> how text is split before BPE: "gpt2" (GPT-2's byte-level regex),
# "digits+gpt2" (every digit alone, then GPT-2's), or a split regex (then byte-level, no regex).
PRE_TOKENIZERS = {"default": "gpt2", "gpt-2": "gpt2", "gpt2": "gpt2", "smollm": "digits+gpt2",
                  "llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}
CONTROL, USER_DEFINED = 3, 4


def _pre_tokenizer(kind: str):
    from tokenizers import Regex, pre_tokenizers

    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if kind == "digits+gpt2":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(kind), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _token(tokens: list[str], key: str, reader) -> str | None:
    index = field(reader, key)
    return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None


def build_tokenizer(reader, path: str):
    """transformers.PreTrainedTokenizerFast rebuilt from the file's tokenizer metadata."""
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise GgufError(f"{path}: tokenizer.ggml.model {model!r} is not supported (byte-level BPE, gpt2, is); "
                        "pass --tokenizer=DIR (or model.tokenizer) with the model's Hugging Face tokenizer")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise GgufError(f"{path}: tokenizer.ggml.pre {pre!r} is not a known pre-tokenizer; known: "
                        f"{', '.join(sorted(PRE_TOKENIZERS))}; pass --tokenizer=DIR with the model's tokenizer")
    tokens = [str(t) for t in field(reader, "tokenizer.ggml.tokens")]
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges", [])]
    if not merges:
        raise GgufError(f"{path}: the byte-level BPE tokenizer has no tokenizer.ggml.merges; "
                        "pass --tokenizer=DIR with the model's Hugging Face tokenizer")
    types = list(field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                   fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = _pre_tokenizer(PRE_TOKENIZERS[pre])
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    bos = _token(tokens, "tokenizer.ggml.bos_token_id", reader)
    if field(reader, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        bos_id = int(field(reader, "tokenizer.ggml.bos_token_id"))
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, types) if kind == CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(tokens, types) if kind == USER_DEFINED])
    special = {name: _token(tokens, f"tokenizer.ggml.{key}_token_id", reader)
               for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                                 ("pad_token", "padding"))}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, **{k: v for k, v in special.items() if v is not None},
        clean_up_tokenization_spaces=False, model_max_length=int(1e30))
    template = field(reader, "tokenizer.chat_template")
    if template:
        tokenizer.chat_template = str(template)
    return tokenizer
