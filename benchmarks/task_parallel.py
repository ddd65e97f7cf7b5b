"""Task-parallel matrices: forgetting-matrix entries per hour with P tasks fine-tuned at once
(matrix.parallel_tasks = P, one compiled step over P stacked train states) against one task at
a time (P = 1), on the same machine in one run.

    python benchmarks/task_parallel.py                         # the demo: 8 tasks x 2,000 examples
    python benchmarks/task_parallel.py --parallel=1,4,8 --tasks=8 --rounds=2 --json=out.json
    python benchmarks/task_parallel.py --set=model.hidden_size=512 --set=model.num_layers=8 ...

The base model and its scores of the N upstream examples are built once (or copied from
--base_workdir) and shared; each setting then runs `run_pipeline` over the same K tasks in its
own process on a fresh workspace, so each pays its own compilation, as a real run does. Timed:
the whole pipeline call (fine-tuning K tasks, scoring N examples after each, writing the rows),
split into fine-tuning and scoring. Entries per hour = K x N / seconds x 3600. Settings
alternate across rounds; medians are reported.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_config(path: str, overrides: list[str]):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.unlock()
    for item in overrides:
        key, value = item.split("=", 1)
        node = config
        *parents, field = key.split(".")
        for part in parents:
            node = node[part]
        current = node[field]
        if isinstance(current, bool):
            value = value.lower() in ("1", "true", "yes")
        elif isinstance(current, (tuple, list)):
            value = tuple(v for v in value.split(",") if v)
        elif current is not None:
            value = type(current)(value)
        node[field] = value
    return config


def worker(args) -> None:
    """One setting in its own process: prints {"seconds", "finetune_seconds", "score_seconds"}."""
    from forgetting_jax.experiment import as_experiment
    from forgetting_jax.matrix import rows, run

    config = load_config(args.config, args.set + [f"matrix.parallel_tasks={args.parallel}"])
    tasks = list(config.data.tasks)[: args.tasks]
    spent = {"finetune": 0.0, "score": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    rows.finetune = timed("finetune", rows.finetune)
    rows.finetune_group = timed("finetune", rows.finetune_group)
    rows.score_params = timed("score", rows.score_params)
    start = time.perf_counter()
    summary = run.run_pipeline(as_experiment(config), args.workdir, tasks=tasks, analyze=False)
    seconds = time.perf_counter() - start
    assert sorted(summary.trained) == sorted(tasks), summary
    import jax

    print(json.dumps({"seconds": seconds, "finetune_seconds": spent["finetune"], "score_seconds": spent["score"],
                      "num_examples": summary.num_examples,
                      "device": f"{jax.devices()[0].device_kind} x {jax.device_count()}"}))


def prepare(config_path: str, overrides: list[str], out: str, base_workdir: str | None) -> None:
    """A workspace holding the base model and its base scores (nothing else)."""
    if base_workdir:
        shutil.copytree(os.path.join(base_workdir, "base"), os.path.join(out, "base"))
        shutil.copytree(os.path.join(base_workdir, "matrix", "base_nll"), os.path.join(out, "matrix", "base_nll"))
    code = ("import sys; sys.path.insert(0, %r); from benchmarks.task_parallel import load_config; "
            "from forgetting_jax.experiment import as_experiment; "
            "from forgetting_jax.matrix.upstream import prepare_upstream; "
            "prepare_upstream(as_experiment(load_config(%r, %r)), %r)" % (ROOT, config_path, overrides, out))
    subprocess.run([sys.executable, "-c", code], check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--set", action="append", default=[], help="config override FIELD=VALUE (repeatable)")
    parser.add_argument("--tasks", type=int, default=8, help="K: the first K tasks of the config")
    parser.add_argument("--parallel", default="1,4,8", help="values of P to compare (1: one task at a time)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--base_workdir", default=None, help="copy the base model and base scores from here")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parallel_value", type=int, dest="parallel_one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.parallel = args.parallel_one
        return worker(args)

    scratch = args.workdir or tempfile.mkdtemp(prefix="task_parallel_")
    shared = os.path.join(scratch, "shared")
    if not os.path.isdir(os.path.join(shared, "base")):
        prepare(args.config, args.set, shared, args.base_workdir)
    values = [int(v) for v in args.parallel.split(",")]
    runs: dict[int, list[dict]] = {p: [] for p in values}
    for round_index in range(args.rounds):
        for p in values:
            workdir = os.path.join(scratch, f"p{p}_r{round_index}")
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.copytree(shared, workdir)
            command = [sys.executable, os.path.abspath(__file__), "--worker", f"--config={args.config}",
                       f"--tasks={args.tasks}", f"--parallel_value={p}", f"--workdir={workdir}"]
            command += [f"--set={s}" for s in args.set]
            out = subprocess.run(command, check=True, capture_output=True, text=True,
                                 env=dict(os.environ, FJ_PROGRESS="0")).stdout
            runs[p].append(json.loads(out.strip().splitlines()[-1]))
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"round {round_index + 1}, P={p}: {runs[p][-1]}", file=sys.stderr, flush=True)

    n = runs[values[0]][0]["num_examples"]
    base_rate = None
    device = runs[values[0]][0]["device"]
    print(f"device: {device}; {os.cpu_count()} CPU cores; "
          f"config {os.path.basename(args.config)} {' '.join(args.set)}; K = {args.tasks} tasks x N = {n} "
          f"examples; median of {args.rounds} round(s)")
    print("| P (tasks at once) | seconds | fine-tuning s | scoring s | entries / hour | vs P = 1 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    results = []
    for p in values:
        seconds = statistics.median(r["seconds"] for r in runs[p])
        finetune = statistics.median(r["finetune_seconds"] for r in runs[p])
        score = statistics.median(r["score_seconds"] for r in runs[p])
        rate = args.tasks * n / seconds * 3600
        base_rate = base_rate or (rate if p == 1 else None)
        ratio = f"{rate / base_rate:.2f}x" if base_rate else "-"
        print(f"| {p} | {seconds:.1f} | {finetune:.1f} | {score:.1f} | {rate:,.0f} | {ratio} |", flush=True)
        results.append({"parallel": p, "seconds": seconds, "finetune_seconds": finetune, "score_seconds": score,
                        "entries_per_hour": rate})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "tasks": args.tasks, "num_examples": n,
                       "overrides": args.set, "results": results}, f, indent=2)
    if not args.workdir:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
