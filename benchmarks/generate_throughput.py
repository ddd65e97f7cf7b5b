"""Greedy decoding throughput: forgetting_jax's KV-cache generator against transformers
`generate(do_sample=False)`, in one run, on the same random-weight model and prompts.

Both decode the same prompts (random tokens of mixed lengths) to a fixed number of new tokens
(no EOS: every row runs the whole budget, so both do the same work) and report new tokens per
second. transformers: batches of prompts sorted by length, left-padded, `generate` with its
default dynamic KV cache. forgetting_jax: `Generator.generate` (prompts bucketed, one prefill, a
compiled decode loop), timed whole (compilation included, from a cold process state) and steady
(the same call again). The completions are compared token by token (fp32 parity; in bf16 they
may differ after a near tie).

  python benchmarks/generate_throughput.py                      # the CPU setting of BENCHMARKS.md
  python benchmarks/generate_throughput.py --preset=olmo1b --dtype=bfloat16 --num_prompts=256 \\
      --batch_size=256 --max_new_tokens=32                       # the GPU suite's phase
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.score_throughput import PRESETS, build_model, report, start_frameworks  # noqa: E402


def make_prompts(preset: str, n: int, lo: int, hi: int, seed: int = 0) -> list[np.ndarray]:
    vocab = PRESETS[preset][5]
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, int(length)).astype(np.int32) for length in rng.integers(lo, hi + 1, n)]


def transformers_generate(model, prompts, batch_size: int, max_new_tokens: int, device: str) -> list[np.ndarray]:
    """Length-sorted, left-padded batches through `generate`; new tokens per prompt, input order."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[np.ndarray] = [np.zeros(0, np.int32)] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            longest = max(len(prompts[i]) for i in idx)
            ids = torch.ones(len(idx), longest, dtype=torch.long)
            attn = torch.zeros(len(idx), longest, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, longest - len(prompts[i]):] = torch.from_numpy(prompts[i].astype(np.int64))
                attn[r, longest - len(prompts[i]):] = 1
            new = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, eos_token_id=None,
                                 pad_token_id=1)[:, longest:]
            for r, i in enumerate(idx):
                out[i] = new[r].cpu().numpy().astype(np.int32)
    if device == "cuda":
        torch.cuda.synchronize()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu_small", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    for name, default in dict(num_prompts=64, batch_size=32, min_prompt=16, max_prompt=128, max_new_tokens=32,
                              repeats=2).items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for each framework (0: all cores)")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args(argv)
    device = start_frameworks(args.threads)
    import jax
    import torch

    from forgetting_jax.models.generate import Generator
    from forgetting_jax.models.loading import load_model

    prompts = make_prompts(args.preset, args.num_prompts, args.min_prompt, args.max_prompt)
    new_tokens = args.num_prompts * args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.preset, tmp, args.dtype).to(device)
        config, params = load_model(tmp, param_dtype=args.dtype, dtype=args.dtype)

    hf_times, whole_times, steady_times = [], [], []
    transformers_generate(model, prompts[:2], 2, 2, device)  # warm-up
    for _ in range(args.repeats):  # alternate the two, so that both see the same machine
        start = time.perf_counter()
        hf_out = transformers_generate(model, prompts, args.batch_size, args.max_new_tokens, device)
        hf_times.append(time.perf_counter() - start)
        if device == "cuda":
            torch.cuda.empty_cache()
        jax.clear_caches()
        start = time.perf_counter()
        generator = Generator(config, params)
        fj_out, _ = generator.generate(prompts, args.max_new_tokens, batch_size=args.batch_size)
        whole_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        fj_out, stats = generator.generate(prompts, args.max_new_tokens, batch_size=args.batch_size)
        steady_times.append(time.perf_counter() - start)

    same = sum(int(np.array_equal(a, b)) for a, b in zip(fj_out, hf_out))
    hf_rate = new_tokens / statistics.median(hf_times)
    whole_rate = new_tokens / statistics.median(whole_times)
    steady_rate = new_tokens / statistics.median(steady_times)
    results = {
        "device": jax.devices()[0].device_kind, "torch_device": device, "preset": args.preset, "dtype": args.dtype,
        "threads": args.threads or os.cpu_count(), "num_prompts": args.num_prompts, "batch_size": args.batch_size,
        "prompt_lengths": [args.min_prompt, args.max_prompt], "max_new_tokens": args.max_new_tokens,
        "new_tokens": new_tokens, "fj_new_tokens_counted": stats.new_tokens,
        "transformers_new_tokens_per_s": round(hf_rate), "fj_whole_process_new_tokens_per_s": round(whole_rate),
        "fj_steady_new_tokens_per_s": round(steady_rate), "ratio_whole": round(whole_rate / hf_rate, 2),
        "ratio_steady": round(steady_rate / hf_rate, 2), "completions_identical": f"{same}/{len(prompts)}",
    }
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
