"""Scoring throughput: forgetting_jax's packed scorer against a plain transformers loop, one run.

Both score the same random examples with the same random-weight model and report real
(non-padding) tokens per second. The transformers loop is the way its users score: batches of
examples sorted by length, padded to the longest in the batch, per-example mean NLL from fp32
log-softmax. forgetting_jax is timed twice: the whole process (packing, compilation and all,
from a cold scorer) and steady state (a warm scorer, the rate over many batches).

  python benchmarks/score_throughput.py                       # the CPU setting of BENCHMARKS.md
  python benchmarks/score_throughput.py --preset=olmo1b --dtype=bfloat16 --num_examples=4096
  python benchmarks/score_throughput.py --preset=smollm2 --model_dir=DIR   # an existing HF model

With --model_dir both sides score that model's weights (the preset then only sets the example
lengths; token ids stay below the model's vocabulary).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

PRESETS = {
    # name: (hidden, layers, heads, kv_heads, mlp, vocab, min_len, max_len)
    "cpu_small": (256, 4, 4, 4, 688, 8192, 32, 384),
    "olmo1b": (2048, 16, 16, 16, 8192, 50304, 64, 1024),
    "smollm2": (576, 30, 9, 3, 1536, 49152, 32, 256),
}
# Presets of another family than OLMo: the extra transformers config fields of each.
LLAMA_PRESETS = {
    "smollm2": dict(tie_word_embeddings=True, head_dim=64, rope_theta=100000.0, rms_norm_eps=1e-5),
}


def preset_config(preset: str):
    """The transformers config of a preset: OLMo, or Llama for the presets in LLAMA_PRESETS."""
    import transformers

    hidden, layers, heads, kv, mlp, vocab, _, _ = PRESETS[preset]
    shape = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                 num_key_value_heads=kv, intermediate_size=mlp, max_position_embeddings=4096)
    if preset in LLAMA_PRESETS:
        return transformers.LlamaConfig(**shape, **LLAMA_PRESETS[preset], bos_token_id=1, eos_token_id=2,
                                        pad_token_id=2)
    return transformers.OlmoConfig(**shape, pad_token_id=1, eos_token_id=2)


def build_model(preset: str, out_dir: str, dtype: str):
    """A random-weight model of `preset`, saved in `out_dir`; returns the transformers model."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(preset_config(preset), dtype=getattr(torch, dtype)).eval()
    model.save_pretrained(out_dir)
    return model


def make_examples(preset: str, n: int, seed: int = 0, vocab: int | None = None):
    """`n` random (ids, loss mask) examples of the preset's lengths; ids in [3, vocab) (default:
    the preset's vocabulary)."""
    *_, preset_vocab, lo, hi = PRESETS[preset]
    vocab = vocab or preset_vocab
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n)
    examples = []
    for length in lengths:
        ids = rng.integers(3, vocab, length).astype(np.int32)
        mask = np.ones(length, bool)
        mask[0] = False
        examples.append((ids, mask))
    return examples


def transformers_loop(model, examples, batch_size: int, device: str):
    """Length-sorted, padded-to-longest batches; returns (mean nll [N], real tokens, slot tokens)."""
    import torch

    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    nll = np.zeros(len(examples), np.float32)
    real = slots = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            longest = max(len(examples[i][0]) for i in idx)
            ids = torch.zeros(len(idx), longest, dtype=torch.long)
            attn = torch.zeros(len(idx), longest, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(examples[i][0])] = torch.from_numpy(examples[i][0].astype(np.int64))
                attn[r, :len(examples[i][0])] = 1
            ids, attn = ids.to(device), attn.to(device)
            logits = model(input_ids=ids, attention_mask=attn).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
            valid = attn[:, 1:].float()
            per_example = -(token_logp * valid).sum(1) / valid.sum(1)
            nll[idx] = per_example.cpu().numpy()
            real += int(attn.sum())
            slots += attn.numel()
    if device == "cuda":
        torch.cuda.synchronize()
    return nll, real, slots


def load_models(args, device: str):
    """(transformers model on `device`, our ModelConfig, our parameters): the same weights, from
    --model_dir or random ones of the preset."""
    import torch
    import transformers

    from forgetting_jax.models.gguf_source import resolve_model_source
    from forgetting_jax.models.loading import load_model

    if args.model_dir:
        model_dir = resolve_model_source(args.model_dir)
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
        config, params = load_model(model_dir, param_dtype=args.dtype, dtype=args.dtype)
        return model.eval().to(device), config, params
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.preset, tmp, args.dtype).to(device)
        config, params = load_model(tmp, param_dtype=args.dtype, dtype=args.dtype)
    return model, config, params


def report(results: dict, json_path: str | None) -> None:
    """The results as aligned lines on stdout, and as JSON at `json_path` when given."""
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)


def start_frameworks(threads: int) -> str:
    """JAX and torch started side by side on `threads` CPU threads each (0: all cores); returns
    torch's device ("cuda" or "cpu"). On one GPU, JAX takes its memory fraction first (its client
    preallocates at start-up), and torch hands its cached blocks back after each of its loops."""
    if threads:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   f" intra_op_parallelism_threads={threads}")
    import jax
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    jax.block_until_ready(jax.device_put(np.zeros(1, np.float32)))
    return device


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu_small", choices=sorted(PRESETS))
    parser.add_argument("--num_examples", type=int, default=512)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hf_batch_size", type=int, default=16)
    parser.add_argument("--tokens_per_batch", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for each framework (0: all cores). 1 is steadier on a shared machine.")
    parser.add_argument("--model_dir", default=None,
                        help="Score this Hugging Face model directory instead of random weights of the preset.")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()
    device = start_frameworks(args.threads)
    import jax
    import torch

    from forgetting_jax.score.scorer import Scorer, plan_batches

    model, config, params = load_models(args, device)
    examples = make_examples(args.preset, args.num_examples, vocab=config.vocab_size)
    real_tokens = sum(len(ids) for ids, _ in examples)

    shape, _ = plan_batches([len(ids) for ids, _ in examples], PRESETS[args.preset][7], args.tokens_per_batch)
    hf_times, whole_times, steady_times = [], [], []
    transformers_loop(model, examples[: args.hf_batch_size], args.hf_batch_size, device)  # warm-up
    for _ in range(args.repeats):  # alternate the two, so that both see the same machine
        start = time.perf_counter()
        hf_nll, real, slots = transformers_loop(model, examples, args.hf_batch_size, device)
        hf_times.append(time.perf_counter() - start)
        if device == "cuda":
            torch.cuda.empty_cache()
        hf_real = real / slots

        jax.clear_caches()
        start = time.perf_counter()
        scorer = Scorer(config, params)
        nll, _, stats = scorer.score(examples, shape)
        whole_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        nll, _, stats = scorer.score(examples, shape)
        steady_times.append(time.perf_counter() - start)

    hf_rate = real_tokens / statistics.median(hf_times)
    whole_rate = real_tokens / statistics.median(whole_times)
    steady_rate = real_tokens / statistics.median(steady_times)
    results = {
        "device": jax.devices()[0].device_kind, "torch_device": device, "preset": args.preset,
        "model_dir": args.model_dir, "dtype": args.dtype, "threads": args.threads or os.cpu_count(), "num_examples": args.num_examples, "real_tokens": real_tokens,
        "shape": [shape.rows_per_batch, shape.row_length],
        "transformers_tokens_per_s": round(hf_rate), "transformers_real_fraction": round(hf_real, 4),
        "fj_whole_process_tokens_per_s": round(whole_rate), "fj_steady_tokens_per_s": round(steady_rate),
        "fj_real_fraction": round(stats.real_fraction, 4),
        "ratio_whole": round(whole_rate / hf_rate, 2), "ratio_steady": round(steady_rate / hf_rate, 2),
        "max_abs_nll_difference": float(np.nanmax(np.abs(nll - hf_nll))),
    }
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
