"""Pipeline overhead per task: the wall time of `run` minus its fine-tuning steps and its scoring.

For K tasks of a config (the base model and its base scores prepared beforehand, not counted):

  wall        run_pipeline(config, W, tasks) from start to finish
  train       the seconds of every optimizer step (the sum of `seconds` in each run's metrics.jsonl)
  score       the seconds of scoring the upstream examples with each fine-tuned model (Scorer.score)
  overhead    (wall - train - score) / K: reading and tokenizing the task's data, compiling,
              validation, checkpoints, export and reload of the fine-tuned weights, writing rows

    python benchmarks/pipeline_overhead.py [--preset=demo|wide] [--tasks=4] [--root=CHECKOUT]

--root runs another checkout of the project (e.g. an earlier commit in a git worktree) with the same
measurement, so before/after figures come from one script. Presets: `demo` is configs/demo.py
(2 layers, width 128); `wide` is the same pipeline with a model of width 512 and 8 layers.
Prints one JSON line per preset.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRESETS = {
    "demo": {},
    "wide": {"model.hidden_size": 512, "model.num_layers": 8, "model.num_heads": 8, "model.num_kv_heads": 8,
             "model.head_dim": 64, "model.mlp_dim": 2048, "pretrain.steps": 20},
}
COMMON = {"matrix.num_upstream": 500, "pretrain.steps": 40}


def worker(root: str, preset: str, num_tasks: int, workdir: str) -> dict:
    sys.path.insert(0, root)
    import importlib.util

    from forgetting_jax.score import scorer

    spec = importlib.util.spec_from_file_location("demo_config", os.path.join(root, "configs", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in {**COMMON, **PRESETS[preset]}.items():
        section, field = key.split(".")
        config[section][field] = value
    from forgetting_jax.experiment import as_experiment
    from forgetting_jax.matrix.run import run_pipeline
    from forgetting_jax.matrix.upstream import prepare_upstream

    config = as_experiment(config)
    prepare_upstream(config, workdir)  # the base model and base scores: not counted
    spent = {"score": 0.0}
    original = scorer.Scorer.score

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent["score"] += time.perf_counter() - start

    scorer.Scorer.score = timed
    tasks = list(config.data.tasks)[:num_tasks]
    start = time.perf_counter()
    run_pipeline(config, workdir, tasks=tasks, analyze=False)
    wall = time.perf_counter() - start
    train = 0.0
    for path in glob.glob(os.path.join(workdir, "tasks", "*", "*", "metrics.jsonl")):
        with open(path) as f:
            train += sum(r.get("seconds", 0.0) for r in map(json.loads, f) if "loss" in r)
    return {"preset": preset, "tasks": num_tasks, "wall_s": round(wall, 2), "train_s": round(train, 2),
            "score_s": round(spent["score"], 2), "overhead_per_task_s": round((wall - train - spent["score"]) / num_tasks, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo,wide")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--root", default=ROOT, help="the checkout to measure")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(worker(os.path.abspath(args.root), args.worker, args.tasks, workdir)))
        return
    env = dict(os.environ, FJ_PROGRESS="0", JAX_PLATFORMS="cpu", PYTHONPATH=os.path.abspath(args.root))
    for preset in args.preset.split(","):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), f"--worker={preset}", f"--tasks={args.tasks}",
                               f"--root={args.root}"], capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines and done.returncode == 0 else json.dumps({"preset": preset,
                                                                          "error": done.stderr[-2000:]}), flush=True)


if __name__ == "__main__":
    main()
