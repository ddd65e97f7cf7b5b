"""Tiny random transformers models of every supported family, saved as HF directories (tests only)."""

import os
import shutil

import torch
import transformers

FAMILY_CONFIGS = {
    "llama": (transformers.LlamaConfig, dict(num_key_value_heads=2)),
    "llama_tied": (transformers.LlamaConfig, dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "llama3_rope": (transformers.LlamaConfig, dict(
        num_key_value_heads=2, attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64))),
    "mistral": (transformers.MistralConfig, dict(num_key_value_heads=2, sliding_window=5, head_dim=16)),
    "qwen2": (transformers.Qwen2Config, dict(num_key_value_heads=2)),
    "olmo": (transformers.OlmoConfig, dict(num_key_value_heads=4, clip_qkv=0.5, pad_token_id=1,
                                           eos_token_id=2, tie_word_embeddings=True)),
    "olmo2": (transformers.Olmo2Config, dict(num_key_value_heads=2, pad_token_id=1, eos_token_id=2)),
    "gpt_neox": (transformers.GPTNeoXConfig, dict(rotary_pct=0.25, use_parallel_residual=True)),
    "gpt_neox_serial": (transformers.GPTNeoXConfig, dict(rotary_pct=0.5, use_parallel_residual=False)),
    # MPT: ALiBi, tied embeddings; its MLP is 4 x hidden whatever intermediate_size says
    "mpt": (transformers.MptConfig, dict(max_seq_len=512)),
}


def make_tiny_model(name: str, out_dir: str, vocab_size: int = 128, hidden_size: int = 64, layers: int = 2,
                    seed: int = 0, dtype=torch.float32):
    """Builds, perturbs (so that every weight matters) and saves a tiny model; returns it (eval mode)."""
    cls, extra = FAMILY_CONFIGS[name]
    config = cls(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                 num_attention_heads=4, intermediate_size=2 * hidden_size + 8, max_position_embeddings=512,
                 attn_implementation="eager", **extra)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in pname or "layernorm" in pname) and pname.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / p.shape[-1] ** 0.5) * 2)
    model = model.to(dtype).eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    return model


def make_hf_base(out_dir: str) -> str:
    """A random-weight HF llama directory (2 layers, width 32) with the demo tokenizer: the Hugging
    Face base model of the training and documented-command tests."""
    from forgetting_jax.data.demo import tokenizer_path

    make_tiny_model("llama", out_dir, vocab_size=4096, hidden_size=32, layers=2)
    for name in os.listdir(tokenizer_path()):
        shutil.copyfile(os.path.join(tokenizer_path(), name), os.path.join(out_dir, name))
    return out_dir


def torch_logits(model, tokens, attention_mask=None):
    """fp32 numpy logits [B, L, V] from a transformers model."""
    with torch.no_grad():
        ids = torch.as_tensor(tokens, dtype=torch.long)
        mask = None if attention_mask is None else torch.as_tensor(attention_mask, dtype=torch.long)
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()


def hf_mean_nll(model, ids, mask) -> float:
    """transformers' mean NLL of tokens ids[1:] where mask[1:] (fp32 log-softmax of one example)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(ids)])).logits[0].float()
    logp = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(list(ids)[1:])[:, None])[:, 0].numpy()
    return float(-(logp * mask[1:]).sum() / mask[1:].sum())


TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog.", "Forgetting is measured example by example.",
    "def add(a, b):\n    return a + b", "Low-rank structure predicts which examples are forgotten.",
    "What is 12 plus 30? 42.", "Replay the examples that are predicted to be forgotten.",
]


def make_tiny_tokenizer(out_dir: str, vocab_size: int = 300):
    """A byte-level BPE tokenizer with BOS/EOS, trained on a few sentences, saved as a HF directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TOKENIZER_TEXT * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                                pad_token="<|pad|>")
    fast.save_pretrained(out_dir)
    return fast
