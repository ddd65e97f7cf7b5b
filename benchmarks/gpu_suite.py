"""The GPU measurement of the OLMo-1B shape, in one run: scoring and full fine-tuning throughput
against the transformers baselines (rerun in the same run), greedy decoding against transformers
generate, cuDNN vs XLA attention, remat, and a per-component time breakdown of the train step. Targets (one H100/H200, bf16): scoring at least
200 k real tokens/s and 2.5x the transformers loop; full fine-tuning at 8 x 1024 at least 65 k
tokens/s and 1.25x the transformers step.

    OUT=/tmp/gpu python benchmarks/gpu_suite.py [--budget=540] [--phases=...] [--smoke]
    bash benchmarks/gpu_suite.sh            (the same, with the environment set up; see BENCHMARKS.md)

Phases run in priority order, each in its own process, until the time budget is spent; every
finished phase is merged into $OUT/results.json and $OUT/summary.md at once, so a run cut short
still returns what it measured. --smoke runs every phase on tiny shapes (any machine, CPU too)
to check the suite itself.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# OLMo-1B: hidden, layers, heads, vocab, MLP of OLMo-1B; smoke: a tiny stand-in.
SHAPES = {"olmo1b": dict(hidden=2048, layers=16, heads=16, vocab=50304, rows=8, length=1024, examples=2048),
          "smoke": dict(hidden=64, layers=2, heads=4, vocab=4096, rows=2, length=64, examples=32)}

PHASES = ("env", "attention", "score_auto", "train_torch", "train_auto", "generate", "components", "train_auto_dots",
          "train_auto_scan", "score_xla", "train_xla", "task_parallel")


def run(command: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout, 1.0),
                              env=dict(os.environ, **(env or {})), cwd=ROOT)
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return 124, out + f"\n[timed out after {timeout:.0f}s]"
    except OSError as err:
        return 127, f"{type(err).__name__}: {err}"


# Phases that run in this process's children -----------------------------------------------------

def phase_env(args) -> dict:
    import jax

    info = {"jax": jax.__version__, "devices": [d.device_kind for d in jax.devices()],
            "backend": jax.default_backend(), "python": sys.version.split()[0]}
    try:
        from jax._src.lib import cuda_versions

        info["cudnn"] = cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception as err:  # noqa: BLE001
        info["cudnn"] = f"unknown ({type(err).__name__})"
    for name in ("torch", "transformers", "flax", "optax", "orbax.checkpoint"):
        try:
            info[name] = __import__(name, fromlist=["_"]).__version__
        except Exception:  # noqa: BLE001
            info[name] = None
    code, smi = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                     "--format=csv,noheader"], 20)
    info["nvidia_smi"] = smi.strip() if code == 0 else None
    return info


def _time(fn, *xs, repeats=10, warmup=2) -> float:
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn(*xs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*xs))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def phase_attention(args) -> dict:
    """Packed causal attention fwd+bwd at the training shape: cuDNN (packed runs) vs XLA (mask)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from forgetting_jax.models import attention
    from forgetting_jax.models.config import ModelConfig

    s = SHAPES[args.shape]
    H, N, B, L = 128 if args.shape == "olmo1b" else 16, s["heads"], s["rows"], s["length"]
    dtype = "bfloat16"
    config = ModelConfig(family="olmo", vocab_size=s["vocab"], hidden_size=N * H, num_layers=1, num_heads=N,
                         num_kv_heads=N, head_dim=H, mlp_dim=4 * N * H, dtype=dtype)
    out = {"shape": [B, L, N, H], "probe": attention.probe(N, N, H, dtype) if jax.default_backend() == "gpu" else None,
           "auto_resolves_to": attention.resolve(config)}
    rng = np.random.default_rng(0)
    segments = np.zeros((B, L), np.int32)
    for b in range(B):  # 4 examples a row, then padding
        cuts = np.sort(rng.choice(np.arange(1, L - 8), 3, replace=False))
        bounds = [0, *cuts, L - 8]
        for k in range(4):
            segments[b, bounds[k]:bounds[k + 1]] = k + 1
    segment_ids = jnp.asarray(segments)
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (B, L, N, H), jnp.bfloat16) for key in keys)
    scale = H ** -0.5
    flops = 4 * B * L * L * N * H * 3.5 / 2  # causal fwd (2 matmuls) + bwd (5): 3.5x fwd, half the square

    def make(impl):
        def loss(q, k, v, segment_ids):
            inputs = attention.attention_inputs(config.replace(attention_impl=impl), segment_ids, segment_ids)
            return jnp.sum(attention.attend(q, k, v, inputs, scale).astype(jnp.float32))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

    results = {}
    for impl in ("xla", "cudnn"):
        try:
            seconds = _time(make(impl), q, k, v, segment_ids)
            results[impl] = {"ms": seconds * 1e3, "tflops": flops / seconds / 1e12}
        except Exception as err:  # noqa: BLE001
            results[impl] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    if all("ms" in r for r in results.values()):
        a = make("xla")(q, k, v, segment_ids)
        b = make("cudnn")(q, k, v, segment_ids)
        out["max_abs_difference"] = max(float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
                                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    out["fwd_bwd"] = results
    return out


def phase_components(args) -> dict:
    """Where a train step's time goes: each piece of the OLMo-1B step timed alone (fwd+bwd),
    at the training shape (rows x length tokens), bf16 compute, fp32 master weights."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from forgetting_jax.models.config import ModelConfig
    from forgetting_jax.models.decoder import DecoderLayer, init_params
    from forgetting_jax.models.layers import rotary_tables
    from forgetting_jax.models.lm_head import token_nll
    from forgetting_jax.models import attention
    from forgetting_jax.train.optimizer import OptimizerSettings, make_optimizer

    s = SHAPES[args.shape]
    d, B, L = s["hidden"], s["rows"], s["length"]
    from forgetting_jax.models.config import scan_unroll

    config = ModelConfig(family="olmo", vocab_size=s["vocab"], hidden_size=d, num_layers=s["layers"],
                         num_heads=s["heads"], num_kv_heads=s["heads"], head_dim=d // s["heads"], mlp_dim=4 * d,
                         dtype="bfloat16")
    config = config.replace(scan_unroll=scan_unroll({"scan_layers": None}, s["layers"]))  # the default
    out = {"tokens": B * L, "scan_unroll": config.scan_unroll}
    x = jax.random.normal(jax.random.key(1), (B, L, d), jnp.bfloat16)
    positions = jnp.broadcast_to(jnp.arange(L), (B, L))
    segments = jnp.ones((B, L), jnp.int32)
    for impl in ("xla", "cudnn"):
        try:
            layer_config = config.replace(attention_impl=impl)
            layer = DecoderLayer(layer_config)
            cos_sin = rotary_tables(layer_config, positions)
            inputs = attention.attention_inputs(layer_config, segments, positions)
            params = nn.unbox(layer.init(jax.random.key(0), x, cos_sin, inputs)["params"])

            def loss(p, x):
                return jnp.sum(layer.apply({"params": p}, x, cos_sin, inputs)[0].astype(jnp.float32))

            seconds = _time(jax.jit(jax.grad(loss, argnums=(0, 1))), params, x)
            out[f"layer_fwd_bwd_{impl}_ms"] = seconds * 1e3
            out[f"all_layers_{impl}_ms"] = seconds * 1e3 * config.num_layers
        except Exception as err:  # noqa: BLE001
            out[f"layer_{impl}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    unembed = jax.random.normal(jax.random.key(2), (d, config.vocab_size), jnp.float32) * 0.02
    targets = jax.random.randint(jax.random.key(3), (B, L), 0, config.vocab_size)

    def head_loss(h, w):
        return jnp.sum(token_nll(h, w, targets, config.logits_chunks))

    out["lm_head_nll_fwd_bwd_ms"] = _time(jax.jit(jax.grad(head_loss, argnums=(0, 1))), x, unembed) * 1e3
    params = jax.jit(lambda key: init_params(config, key)[0])(jax.random.key(0))
    optimizer = make_optimizer(OptimizerSettings(lr=1e-5, steps=1000, warmup_steps=10))
    opt_state = jax.jit(optimizer.init)(params)

    def update(grads, state, params):
        import optax

        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    out["adamw_update_ms"] = _time(jax.jit(update), params, opt_state, params, repeats=5) * 1e3
    out["num_params"] = config.num_params
    del opt_state

    # The composed pieces: the whole model's fwd+bwd (scanned layers, the attention `auto` picks),
    # then the whole train step (micro-batch scan, clipping, AdamW, donated state). What the step
    # costs beyond the sum of the parts above is in the composition, not in a kernel.
    from forgetting_jax.train.mesh import make_mesh
    from forgetting_jax.train.step import StepSettings, compiled_steps, loss_sums

    tokens = jax.random.randint(jax.random.key(4), (B, L), 0, config.vocab_size)
    batch = {"tokens": tokens, "targets": jnp.roll(tokens, -1, axis=1), "loss_mask": jnp.ones((B, L), bool),
             "segment_ids": segments, "positions": positions}
    try:
        model_grad = jax.jit(jax.grad(lambda p, b: loss_sums(config, p, b)[0]))
        out["model_fwd_bwd_ms"] = _time(model_grad, params, batch, repeats=5) * 1e3
        del model_grad
        steps = compiled_steps(config, StepSettings(micro_batches=1, micro_rows=B, row_length=L,
                                                    optimizer=OptimizerSettings(lr=1e-5, steps=1000)),
                               make_mesh({"data": 1}, jax.devices()[:1]))
        state = steps.init_state(params)
        micro = {k: v[None] for k, v in batch.items()}
        for _ in range(2):
            state, metrics = steps.train_step(state, {}, micro)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            state, metrics = steps.train_step(state, {}, micro)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        out["train_step_ms"] = statistics.median(times) * 1e3
    except Exception as err:  # noqa: BLE001
        out["composed_error"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"
    return out


def phase_task_parallel(args) -> dict:
    """Matrix entries per hour on this GPU, P tasks at once vs one at a time (the demo pipeline,
    widened so that a task is real work for the GPU)."""
    out_json = os.path.join(args.scratch, "task_parallel.json")
    sets = [] if args.shape == "smoke" else ["--set=model.hidden_size=512", "--set=model.num_layers=8",
                                             "--set=model.mlp_dim=2048", "--set=model.num_heads=8",
                                             "--set=model.head_dim=64", "--set=model.num_kv_heads=8",
                                             "--set=pretrain.steps=100"]
    smoke = ["--set=train.steps=4", "--set=matrix.num_upstream=32", "--set=pretrain.steps=4",
             "--set=pretrain.max_examples=64"] if args.shape == "smoke" else []
    code, log = run([sys.executable, os.path.join(ROOT, "benchmarks", "task_parallel.py"), "--tasks=8",
                     "--parallel=1,8", f"--json={out_json}", f"--workdir={os.path.join(args.scratch, 'tp')}"]
                    + sets + smoke, args.remaining)
    if code != 0:
        raise RuntimeError(log[-3000:])
    with open(out_json) as f:
        return json.load(f)


def phase_score(args, attention_impl: str) -> dict:
    s = SHAPES[args.shape]
    out_json = os.path.join(args.scratch, f"score_{attention_impl}.json")
    preset = "olmo1b" if args.shape == "olmo1b" else "cpu_small"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "score_throughput.py"), f"--preset={preset}",
               "--dtype=bfloat16", f"--num_examples={s['examples']}", "--hf_batch_size=32",
               f"--tokens_per_batch={32768 if args.shape == 'olmo1b' else 4096}", "--repeats=2", f"--json={out_json}"]
    env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.6"}
    if attention_impl != "auto":
        env["FJ_ATTENTION"] = attention_impl
    code, log = run(command, args.remaining, env)
    if code != 0:
        raise RuntimeError(log[-3000:])
    with open(out_json) as f:
        return json.load(f)


def phase_generate(args) -> dict:
    """Greedy decoding of 32-token answers for a batch of 256 prompts (OLMo-1B shape, bf16), against
    transformers generate in the same run (benchmarks/generate_throughput.py)."""
    out_json = os.path.join(args.scratch, "generate.json")
    big = args.shape == "olmo1b"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "generate_throughput.py"),
               f"--preset={'olmo1b' if big else 'cpu_small'}", "--dtype=bfloat16",
               f"--num_prompts={256 if big else 8}", f"--batch_size={256 if big else 8}",
               f"--min_prompt={64 if big else 8}", f"--max_prompt={512 if big else 32}",
               f"--max_new_tokens={32 if big else 4}", "--repeats=2", f"--json={out_json}"]
    code, log = run(command, args.remaining, {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.6"})
    if code != 0:
        raise RuntimeError(log[-3000:])
    with open(out_json) as f:
        return json.load(f)


def _train_model_dir(args) -> str:
    directory = os.path.join(args.scratch, "train_model")
    if not os.path.isfile(os.path.join(directory, "config.json")):
        from benchmarks.train_throughput import build_model

        s = SHAPES[args.shape]
        build_model(directory, s["hidden"], s["layers"], s["vocab"], s["heads"])
    return directory


def phase_train(args, framework: str, attention_impl: str = "auto", remat: str = "none", layers: str = "default"
                ) -> dict:
    """layers: default (the project's default: unrolled on GPUs), scan or unroll."""
    s = SHAPES[args.shape]
    model_dir = _train_model_dir(args)
    steps, warmup = (8, 3) if args.shape == "olmo1b" else (3, 1)
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "train_throughput.py"), f"--worker={framework}",
               "--kind=full rows", "--dtype=bfloat16", f"--model_dir={model_dir}", f"--rows={s['rows']}",
               f"--length={s['length']}", f"--steps={steps}", f"--warmup={warmup}", "--threads=1",
               f"--remat={remat}", f"--scan_unroll={ {'default': 0, 'scan': 1, 'unroll': s['layers']}[layers] }"]
    env = {} if attention_impl == "auto" else {"FJ_ATTENTION": attention_impl}
    code, log = run(command, args.remaining, env)
    if code != 0:
        raise RuntimeError(log[-3000:])
    rates = json.loads([line for line in log.splitlines() if line.startswith("[")][-1])
    return {"framework": framework, "attention": attention_impl, "remat": remat, "layers": layers, "rows": s["rows"],
            "length": s["length"], "tokens_per_s_median": statistics.median(rates), "tokens_per_s": rates}


def phase(name: str, args) -> dict:
    if name == "env":
        return phase_env(args)
    if name == "attention":
        return phase_attention(args)
    if name == "components":
        return phase_components(args)
    if name == "task_parallel":
        return phase_task_parallel(args)
    if name == "generate":
        return phase_generate(args)
    if name.startswith("score_"):
        return phase_score(args, name.split("_", 1)[1])
    if name == "train_torch":
        return phase_train(args, "torch")
    if name.startswith("train_"):  # train_<attention>[_<remat>][_scan|_unroll]
        parts = name.split("_")[1:]
        layers = parts.pop() if parts[-1] in ("scan", "unroll") else "default"
        return phase_train(args, "jax", parts[0], parts[1] if len(parts) > 1 else "none", layers)
    raise ValueError(f"unknown phase {name}")


# The report --------------------------------------------------------------------------------------

def summary(results: dict) -> str:
    lines = ["# GPU suite", ""]
    env = results.get("env", {})
    lines.append(f"device: {env.get('nvidia_smi') or env.get('devices')}; jax {env.get('jax')}, cuDNN "
                 f"{env.get('cudnn')}, torch {env.get('torch')}, transformers {env.get('transformers')}")
    lines += ["", "| measurement | tokens/s | target | note |", "| --- | ---: | ---: | --- |"]
    for name in ("score_auto", "score_xla"):
        r = results.get(name)
        if isinstance(r, dict) and "fj_steady_tokens_per_s" in r:
            lines.append(f"| scoring, forgetting_jax, attention {name[6:]} (steady) | {r['fj_steady_tokens_per_s']:,} "
                         f"| 200,000 | {100 * r['fj_real_fraction']:.0f}% real tokens; whole process "
                         f"{r['fj_whole_process_tokens_per_s']:,}/s |")
            lines.append(f"| scoring, transformers, batch 32 sorted (same run) | {r['transformers_tokens_per_s']:,} | "
                         f"| max NLL difference {r['max_abs_nll_difference']:.3g} |")
    for name in ("train_torch", "train_auto", "train_auto_dots", "train_auto_scan", "train_auto_unroll",
                 "train_xla"):
        r = results.get(name)
        if isinstance(r, dict) and "tokens_per_s_median" in r:
            label = "transformers (fp32 + bf16 autocast, fused AdamW)" if r["framework"] == "torch" else \
                f"forgetting_jax, attention {r['attention']}, remat {r['remat']}" + \
                f", layers {r.get('layers', 'default')}"
            lines.append(f"| full fine-tuning {r['rows']} x {r['length']}, {label} | {r['tokens_per_s_median']:,.0f} | "
                         f"{'65,000' if r['framework'] == 'jax' else ''} | |")
    r = results.get("generate")
    if isinstance(r, dict) and "fj_steady_new_tokens_per_s" in r:
        lines.append(f"| greedy decoding {r['num_prompts']} prompts x {r['max_new_tokens']} new tokens, forgetting_jax "
                     f"(steady) | {r['fj_steady_new_tokens_per_s']:,} | | whole process "
                     f"{r['fj_whole_process_new_tokens_per_s']:,}/s; completions identical {r['completions_identical']} |")
        lines.append(f"| greedy decoding, transformers generate (same run) | {r['transformers_new_tokens_per_s']:,} | | |")
    attention = results.get("attention")
    if isinstance(attention, dict) and "fwd_bwd" in attention:
        for impl, r in attention["fwd_bwd"].items():
            text = f"{r['ms']:.2f} ms, {r['tflops']:.0f} TFLOP/s" if "ms" in r else r.get("error", "")
            lines.append(f"| packed causal attention fwd+bwd {attention['shape']}, {impl} | | | {text} |")
        lines.append(f"| attention auto resolves to | | | {attention.get('auto_resolves_to')} (probe "
                     f"{attention.get('probe')}, max difference {attention.get('max_abs_difference', 'n/a')}) |")
    components = results.get("components")
    if isinstance(components, dict) and "adamw_update_ms" in components:
        lines += ["", "| train-step component (fwd+bwd) | ms |", "| --- | ---: |"]
        for key, value in components.items():
            if key.endswith("_ms"):
                lines.append(f"| {key[:-3].replace('_', ' ')} | {value:.1f} |")
    tp = results.get("task_parallel")
    if isinstance(tp, dict) and "results" in tp:
        lines += ["", "| tasks at once | entries / hour |", "| ---: | ---: |"]
        lines += [f"| {r['parallel']} | {r['entries_per_hour']:,.0f} |" for r in tp["results"]]
    failed = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v and len(v) == 1}
    if failed:
        lines += ["", "Failed or skipped phases:"] + [f"- {k}: {v['error'][:400]}" for k, v in failed.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=float(os.environ.get("FJ_SUITE_SECONDS", 540)),
                        help="seconds for the whole suite; phases that do not fit are skipped")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--out", default=os.environ.get("OUT", os.path.join(ROOT, "gpu_suite_out")))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check the suite on any machine")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--remaining", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shape = "smoke" if args.smoke else "olmo1b"
    if args.phase:  # a child: one phase, its JSON on the last line
        print(json.dumps(phase(args.phase, args)))
        return
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="gpu_suite_")
    deadline = time.time() + args.budget
    results: dict = {}
    log_path = os.path.join(args.out, "log.txt")
    for name in args.phases.split(","):
        remaining = deadline - time.time()
        if remaining < 20:
            results[name] = {"error": "skipped: the time budget is spent"}
            continue
        started = time.time()
        code, log = run([sys.executable, os.path.abspath(__file__), f"--phase={name}", f"--scratch={scratch}",
                         f"--remaining={remaining - 10:.0f}"] + (["--smoke"] if args.smoke else []), remaining - 5)
        with open(log_path, "a") as f:
            f.write(f"==== {name} (exit {code}, {time.time() - started:.0f}s)\n{log[-20000:]}\n")
        try:
            last = [line for line in log.splitlines() if line.startswith("{")][-1]
            results[name] = json.loads(last) if code == 0 else {"error": log[-1500:]}
        except (json.JSONDecodeError, IndexError):
            results[name] = {"error": log[-1500:]}
        results[name + "_seconds"] = round(time.time() - started, 1)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(summary(results))
        print(f"{name}: {'ok' if code == 0 else 'failed'} in {time.time() - started:.0f}s", flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
