"""CPU throughput at SmolLM2-135M's shape: forgetting_jax against transformers on the same weights.

    python benchmarks/real_model_cpu.py --model=PATH --json=real_model_cpu.json

PATH is a Hugging Face model directory or a .gguf file (converted once into a directory beside
it: models/gguf_source.py); without --model, random weights of SmolLM2-135M's shape (llama,
width 576, 30 layers, 9 heads, 3 kv heads, head_dim 64, MLP 1536, vocab 49,152, tied
embeddings). One invocation runs, on the CPU and on those same weights:

  scoring      benchmarks/score_throughput.py --preset=smollm2 --model_dir=DIR: --num_examples
               random examples of 32-256 tokens, our packed `Scorer` against a length-sorted,
               padded transformers loop, over --score_rounds alternating rounds; reported in
               steady state (a warm scorer) and for the whole process (compilation included)
  fine-tuning  benchmarks/train_throughput.py --model_dir=DIR: AdamW steps on --rows x --length
               full rows and on batches of 8 examples of random length (transformers pads, we
               pack), --steps measured steps after --warmup, --train_rounds alternating rounds,
               one process per framework

and prints one Markdown table (workload | transformers tokens/s | forgetting_jax tokens/s |
ratio: ours over theirs, real non-padding tokens per second, medians), with the CPU model, the
core count and the versions of jax, torch and transformers; --json writes all of it, with the
raw results of both scripts. Each framework runs on --threads CPU threads. The defaults take
roughly ten minutes on a 2-core CPU.
"""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PRESET = "smollm2"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="a Hugging Face model directory or a .gguf file (default: random SmolLM2-shaped weights)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per framework (at least 1)")
    parser.add_argument("--num_examples", type=int, default=128, help="scored examples (32-256 tokens each)")
    parser.add_argument("--score_rounds", type=int, default=2, help="alternating scoring rounds")
    parser.add_argument("--score_dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hf_batch_size", type=int, default=16, help="examples per transformers scoring batch")
    parser.add_argument("--tokens_per_batch", type=int, default=16384, help="tokens per forgetting_jax scoring batch")
    parser.add_argument("--rows", type=int, default=4, help="rows per fine-tuning step (full rows)")
    parser.add_argument("--length", type=int, default=256, help="tokens per fine-tuning row")
    parser.add_argument("--steps", type=int, default=3, help="measured fine-tuning steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="fine-tuning warm-up steps per process")
    parser.add_argument("--train_rounds", type=int, default=2, help="alternating fine-tuning rounds")
    parser.add_argument("--train_dtypes", default="float32", help="comma-separated: float32, bfloat16")
    parser.add_argument("--kinds", default="full rows,examples", help="comma-separated fine-tuning workloads")
    parser.add_argument("--skip_scoring", action="store_true")
    parser.add_argument("--skip_training", action="store_true")
    parser.add_argument("--json", default=None, help="also write the table, machine, versions and raw results here")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def child_env() -> dict:
    """The environment of the benchmark processes: JAX and torch on the CPU, quiet."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=path)


def run(command: list[str]) -> None:
    """Runs one benchmark process, its output shown as it goes; stops on failure."""
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, env=child_env())
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform module says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count()}


def versions() -> dict:
    """Installed versions of the packages compared (read from their metadata, not imported)."""
    out = {}
    for name in ("jax", "jaxlib", "flax", "torch", "transformers"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def prepare_model(path: str | None, tmp: str) -> str:
    """The model directory to benchmark: `path` (a .gguf file resolved to its converted directory),
    or random weights of the smollm2 preset saved under `tmp`."""
    if path:
        from forgetting_jax.models.gguf_source import resolve_model_source

        return os.path.abspath(resolve_model_source(path))
    out = os.path.join(tmp, "random_smollm2")
    code = (f"import sys; sys.path.insert(0, {HERE!r}); from score_throughput import build_model; "
            f"build_model({PRESET!r}, {out!r}, 'float32')")
    run([sys.executable, "-c", code])
    return out


def describe(model_dir: str) -> str:
    """One line on the model's shape, from its config.json."""
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    heads = c.get("num_attention_heads")
    return (f"{c.get('model_type')} d{c.get('hidden_size')} x {c.get('num_hidden_layers')} layers, "
            f"{heads}/{c.get('num_key_value_heads') or heads} heads, MLP {c.get('intermediate_size')}, "
            f"vocab {c.get('vocab_size')}{', tied embeddings' if c.get('tie_word_embeddings') else ''}")


def scoring(args, model_dir: str, tmp: str) -> dict:
    """score_throughput.py's results on `model_dir`."""
    out = os.path.join(tmp, "scoring.json")
    run([sys.executable, os.path.join(HERE, "score_throughput.py"), f"--preset={PRESET}", f"--model_dir={model_dir}",
         f"--num_examples={args.num_examples}", f"--repeats={args.score_rounds}", f"--dtype={args.score_dtype}",
         f"--hf_batch_size={args.hf_batch_size}", f"--tokens_per_batch={args.tokens_per_batch}",
         f"--threads={args.threads}", f"--json={out}"])
    with open(out) as f:
        return json.load(f)


def training(args, model_dir: str, tmp: str) -> list[dict]:
    """train_throughput.py's results on `model_dir`, one record per workload and dtype."""
    out = os.path.join(tmp, "training.json")
    run([sys.executable, os.path.join(HERE, "train_throughput.py"), f"--model_dir={model_dir}",
         f"--rows={args.rows}", f"--length={args.length}", f"--steps={args.steps}", f"--warmup={args.warmup}",
         f"--rounds={args.train_rounds}", f"--threads={args.threads}", f"--dtypes={args.train_dtypes}",
         f"--kinds={args.kinds}", f"--json={out}"])
    with open(out) as f:
        return json.load(f)


def table_rows(score: dict | None, train: list[dict] | None) -> list[dict]:
    """The table's rows: workload, both rates and the ratio (ours over transformers)."""
    rows = []
    if score:
        what = f"{score['num_examples']} examples, 32-256 tokens, {score['dtype']}"
        hf = score["transformers_tokens_per_s"]
        rows.append({"workload": f"scoring, steady state ({what})", "transformers": hf,
                     "forgetting_jax": score["fj_steady_tokens_per_s"], "ratio": score["ratio_steady"]})
        rows.append({"workload": f"scoring, whole process incl. compilation ({what})", "transformers": hf,
                     "forgetting_jax": score["fj_whole_process_tokens_per_s"], "ratio": score["ratio_whole"]})
    for r in train or []:
        shape = f"{r['rows']} x {r['length']}" if r["kind"] == "full rows" else f"8 examples of <= {r['length']}"
        rows.append({"workload": f"fine-tuning, {r['kind']} ({shape}, {r['dtype']})",
                     "transformers": r["transformers_tokens_per_s"], "forgetting_jax": r["fj_tokens_per_s"],
                     "ratio": r["ratio"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| workload | transformers tokens/s | forgetting_jax tokens/s | ratio |", "| --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['transformers']:,} | {r['forgetting_jax']:,} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prepare_model(args.model, tmp)
        model = describe(model_dir)
        score = None if args.skip_scoring else scoring(args, model_dir, tmp)
        train = None if args.skip_training else training(args, model_dir, tmp)
    rows = table_rows(score, train)
    info, vers = machine(), versions()
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores; {args.threads} thread(s) per framework")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v))
    print(f"model: {args.model or 'random weights'} ({model})")
    print()
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "versions": vers, "model": args.model, "model_shape": model,
                       "settings": vars(args), "table": rows, "scoring": score, "training": train}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
