"""Training throughput: the compiled JAX train step against a plain PyTorch + transformers loop.

    python benchmarks/train_throughput.py [--hidden 128 --layers 2 --vocab 4096 --threads 1]
    python benchmarks/train_throughput.py --preset=smollm2 --dtypes=float32   # SmolLM2-135M's shape
    python benchmarks/train_throughput.py --model_dir=DIR --json=out.json     # an existing HF model

One random-weight Llama-style model is built with transformers (of --hidden/--layers/--heads/
--vocab, or of a --preset), saved, and imported into this project (`load_hf_model`); or both
read the existing Hugging Face directory --model_dir. Either way both loops train the same
model on the same tokens (ids below min(4000, vocab)) with AdamW (lr 1e-4, clipping at 1.0).
Two workloads:

  full rows   R rows of L tokens, every token real and trained (the plain rate)
  examples    the paper's batch of 8 examples per step, lengths drawn uniformly from [L/8, L];
              transformers pads each batch to its longest example (the usual collator), this
              project packs the 8 examples into rows of L tokens (`train/batches.py`)

Reported: median real (non-padding) tokens per second over --rounds x --steps steps after
--warmup steps, each framework in its own process with --threads CPU threads and the rounds
alternating between frameworks, in float32 and with bfloat16 compute (torch: autocast; ours:
fp32 master weights, bf16 matmuls). On a GPU machine both loops run on the GPU (torch with
fused AdamW).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


PRESETS = {
    # name: the LlamaConfig fields of a random model of that shape
    "smollm2": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, intermediate_size=1536, tie_word_embeddings=True,
                    rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
}


def build_model(out_dir, hidden, layers, vocab, heads, preset=None):
    """A random-weight Llama saved in `out_dir` (returned): of the preset's shape when given, else
    d`hidden` x `layers` layers, `heads` heads, MLP 4 x hidden, untied embeddings."""
    import torch
    import transformers

    if preset:
        fields = PRESETS[preset]
    else:
        fields = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=4096)
    config = transformers.LlamaConfig(**fields, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir)
    return out_dir


def make_examples(kind, steps, rows, length, seed=0, vocab=4096):
    """Per step, a list of (ids, mask) examples: full rows, or 8 examples of random length; ids
    below min(4000, vocab)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if kind == "full rows":
            lengths = [length] * rows
        else:
            lengths = rng.integers(length // 8, length + 1, 8).tolist()
        step = []
        for n in lengths:
            ids = rng.integers(0, min(4000, vocab), n).astype(np.int32)
            mask = np.ones(n, bool)
            mask[0] = False
            step.append((ids, mask))
        out.append(step)
    return out


def model_fields(model_dir) -> dict:
    """The config.json of the Hugging Face model in `model_dir`."""
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def describe(fields: dict) -> str:
    """One line on a model's shape, from its config.json fields."""
    heads, kv = fields.get("num_attention_heads"), fields.get("num_key_value_heads")
    return (f"{fields.get('model_type', 'llama')} d{fields.get('hidden_size')} x {fields.get('num_hidden_layers')} "
            f"layers, {heads}/{kv or heads} heads, MLP {fields.get('intermediate_size')}, "
            f"vocab {fields.get('vocab_size')}{', tied embeddings' if fields.get('tie_word_embeddings') else ''}")


def real_tokens(step):
    return sum(len(ids) for ids, _ in step)


class JaxTrainer:
    """This project's compiled step on one device; batches packed ahead of time."""

    def __init__(self, model_dir, workload, kind, dtype, rows, length, remat="none", scan_unroll=0):
        import jax

        from forgetting_jax.data.packing import first_fit_decreasing, materialize_rows
        from forgetting_jax.models.hf_checkpoint import load_hf_model
        from forgetting_jax.train.mesh import make_mesh
        from forgetting_jax.train.optimizer import OptimizerSettings
        from forgetting_jax.train.step import BATCH_FIELDS, StepSettings, compiled_steps

        from forgetting_jax.models.config import scan_unroll as default_unroll

        config, params, _ = load_hf_model(model_dir)
        scan_unroll = scan_unroll or default_unroll({"scan_layers": None}, config.num_layers)
        config = config.replace(dtype=dtype, remat_policy=remat, scan_unroll=scan_unroll)
        mesh = make_mesh({"data": 1}, jax.devices()[:1])
        # Full rows: one micro-batch of all rows. Examples: room for 8 rows in micro-batches of 2;
        # the step skips the micro-batches that packing left empty.
        micro_batches, micro_rows = (1, rows) if kind == "full rows" else (4, 2)
        settings = StepSettings(micro_batches=micro_batches, micro_rows=micro_rows, row_length=length,
                                optimizer=OptimizerSettings(lr=1e-4, steps=10 ** 6, warmup_steps=0))
        self.steps = compiled_steps(config, settings, mesh)
        self.state = self.steps.init_state(jax.device_put(params, self.steps.trainable_shardings))
        self.batches = []
        for step in workload:
            packed_rows = first_fit_decreasing([len(ids) for ids, _ in step], length, 64)
            packed = materialize_rows(step, packed_rows, length, 64, num_rows=micro_batches * micro_rows)
            self.batches.append(jax.device_put(
                {k: getattr(packed, k).reshape(micro_batches, micro_rows, -1) for k in BATCH_FIELDS},
                {k: self.steps.batch_sharding for k in BATCH_FIELDS}))

    def step(self, i):
        import jax

        start = time.perf_counter()
        self.state, metrics = self.steps.train_step(self.state, {}, self.batches[i])
        jax.block_until_ready(metrics)
        return time.perf_counter() - start


class TorchTrainer:
    """A plain transformers loop: pad to the longest example, labels -100 off the trained tokens."""

    def __init__(self, model_dir, workload, dtype, threads):
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch, self.dtype = torch, dtype
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                                       attn_implementation="sdpa").to(self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.0,
                                           fused=self.device == "cuda")
        self.batches = []
        for step in workload:
            longest = max(len(ids) for ids, _ in step)
            input_ids = torch.zeros((len(step), longest), dtype=torch.long)
            attention = torch.zeros((len(step), longest), dtype=torch.long)
            labels = torch.full((len(step), longest), -100, dtype=torch.long)
            for i, (ids, mask) in enumerate(step):
                ids_t = torch.as_tensor(ids, dtype=torch.long)
                input_ids[i, :len(ids)] = ids_t
                attention[i, :len(ids)] = 1
                labels[i, :len(ids)] = torch.where(torch.as_tensor(mask), ids_t, -100)
            self.batches.append(tuple(t.to(self.device) for t in (input_ids, attention, labels)))

    def step(self, i):
        torch = self.torch
        input_ids, attention, labels = self.batches[i]
        start = time.perf_counter()
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
            loss = self.model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
        else:
            loss.item()
        return time.perf_counter() - start


def worker_env(threads: int) -> dict:
    """The environment of a worker: JAX on the CPU with `threads` threads (XLA flags), quiet."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""), TF_CPP_MIN_LOG_LEVEL="2")
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1").strip()
    return env


def worker(args) -> None:
    """One framework, one workload, one dtype, in its own process: prints per-step rates as JSON."""
    vocab = model_fields(args.model_dir)["vocab_size"]
    workload = make_examples(args.kind, args.warmup + args.steps, args.rows, args.length, vocab=vocab)
    if args.worker == "torch":
        trainer = TorchTrainer(args.model_dir, workload, args.dtype, args.threads)
    else:
        trainer = JaxTrainer(args.model_dir, workload, args.kind, args.dtype, args.rows, args.length, args.remat,
                             args.scan_unroll)
    rates = []
    for i in range(len(workload)):
        seconds = trainer.step(i)
        if i >= args.warmup:
            rates.append(real_tokens(workload[i]) / seconds)
    print(json.dumps(rates))


def run_worker(command: list[str], threads: int) -> list[float]:
    """The per-step rates one worker process prints; its stderr shown when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, env=worker_env(threads))
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"worker failed ({done.returncode}): {' '.join(command)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="a random Llama of this shape instead of --hidden/--layers/--heads/--vocab")
    parser.add_argument("--model_dir", default=None,
                        help="train this existing Hugging Face model directory instead of a random Llama")
    parser.add_argument("--json", default=None, help="also write the results (one record per row) here")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="measured steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, one process per framework")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per framework (torch intra-op threads; XLA's Eigen pool)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--kinds", default="full rows,examples")
    parser.add_argument("--remat", default="none", help="remat policy of the JAX step (none, full, dots, dots_no_batch)")
    parser.add_argument("--scan_unroll", type=int, default=0,
                        help="layers per iteration of the JAX step's layer scan (1: scanned; the layer count: "
                             "unrolled; 0: the project's default, model.scan_layers=None: unrolled on GPUs)")
    parser.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    import jax

    from forgetting_jax.models.gguf_source import resolve_model_source

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = (resolve_model_source(args.model_dir) if args.model_dir
                     else build_model(tmp, args.hidden, args.layers, args.vocab, args.heads, args.preset))
        print(f"device: {jax.devices()[0].device_kind} ({jax.device_count()} devices), {os.cpu_count()} CPU cores, "
              f"{args.threads} thread(s) per framework; model: {describe(model_fields(model_dir))}; "
              f"rows {args.rows} x {args.length}; "
              f"median over {args.rounds} x {args.steps} steps after {args.warmup} warm-up steps per process")
        results = compare(args, model_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def compare(args, model_dir) -> list[dict]:
    """Each workload x dtype: the rounds alternating between the two workers; prints a Markdown
    table row by row and returns its records."""
    print("| workload | dtype | transformers tokens/s | forgetting_jax tokens/s | speed-up |")
    print("| --- | --- | ---: | ---: | ---: |")
    common = [f"--{k}={getattr(args, k)}" for k in ("rows", "length", "steps", "warmup", "threads", "remat",
                                                    "scan_unroll")]
    results = []
    for kind in args.kinds.split(","):
        for dtype in args.dtypes.split(","):
            rates = {"torch": [], "jax": []}
            for _ in range(args.rounds):  # separate processes: one framework's threads never slow the other
                for name in rates:
                    rates[name] += run_worker(
                        [sys.executable, os.path.abspath(__file__), f"--worker={name}", f"--kind={kind}",
                         f"--dtype={dtype}", f"--model_dir={model_dir}", *common], args.threads)
            torch_rate, jax_rate = (statistics.median(rates[n]) for n in ("torch", "jax"))
            print(f"| {kind} | {dtype} | {torch_rate:,.0f} | {jax_rate:,.0f} | {jax_rate / torch_rate:.2f}x |",
                  flush=True)
            results.append({"kind": kind, "dtype": dtype, "rows": args.rows, "length": args.length,
                            "threads": args.threads, "transformers_tokens_per_s": round(torch_rate),
                            "fj_tokens_per_s": round(jax_rate), "ratio": round(jax_rate / torch_rate, 2),
                            "transformers_step_rates": rates["torch"], "fj_step_rates": rates["jax"]})
    return results


if __name__ == "__main__":
    main()
