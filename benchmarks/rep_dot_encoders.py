"""rep_dot frozen, top:K and full against matrix completion, at matched budgets, on a workspace's matrix.

Every rep_dot variant trains the same number of steps on the same pairs (batch_tasks task examples,
each with a forgotten and a kept upstream example) and chooses its step by F1 on the same held-out
training tasks; the encoder variants run at the paper's final code's learning rates (encoder 1e-5,
head 1e-4) and at ten times those. The completion methods and the references run once on the same
split. Learning curves: the dev F1 at every choice of the step (W/predict/rep_dot/<fp>/metrics.jsonl
of the encoder runs; the frozen head's own record).

  python benchmarks/rep_dot_encoders.py --workdir=W --config=configs/demo.py --steps=2000
  python benchmarks/rep_dot_encoders.py ... --write      # + the section of BENCHMARKS.md
  python benchmarks/rep_dot_encoders.py ... --json R.json
"""

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## rep_dot: frozen, top:K and full encoders against completion"
COMPLETION = ("additive", "multiplicative", "als", "knn", "train_mean", "observed_mean")


def _config(path: str):
    from forgetting_jax.experiment import as_experiment

    spec = importlib.util.spec_from_file_location("config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return as_experiment(module.get_config())


def _curve(run_dir: str) -> list[tuple[int, float]]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return [(m["step"], 1.0 - m["val_loss"]) for m in lines if "val_loss" in m and m["step"] > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval_every", type=int, default=200)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--encoders", default="frozen,top:1,full")
    parser.add_argument("--json")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    from forgetting_jax.analysis.matrix_file import read_matrix_file
    from forgetting_jax.matrix.encoder_inputs import encoder_inputs
    from forgetting_jax.predict import comparison, protocol
    from forgetting_jax.predict.rep_dot import RepDotConfig, RepDot
    from forgetting_jax.analysis.chunks import ColumnChunks

    config = _config(args.config)
    matrix = os.path.join(args.workdir, "experiments", config.name, "forgetting.npz")
    data = read_matrix_file(matrix)
    tasks = data["tasks"]
    test_idx = protocol.select_test_tasks(tasks, None, float(config.predict.test_fraction), 0)
    base = dict(k=args.k, seeds=args.seeds, split_seed=0, per_task=False)
    rows = {}
    t0 = time.perf_counter()
    result = comparison.compare(data, test_idx, comparison.ComparisonSettings(methods=COMPLETION, **base))
    for name, entry in result["methods"].items():
        rows[name] = dict(entry["pooled"], auc=entry["auc"], seconds=entry["seconds"], curve=None)
    print(f"completion: {time.perf_counter() - t0:.1f}s", flush=True)

    inputs = None
    variants = []
    for encoder in args.encoders.split(","):
        if encoder == "frozen":
            variants.append((encoder, 1e-3, 0.0))
        else:
            variants += [(encoder, 1e-4, 1e-5), (encoder, 1e-3, 1e-4)]
    for encoder, lr_head, lr_encoder in variants:
        label = f"rep_dot {encoder}" + ("" if encoder == "frozen" else f" (encoder {lr_encoder:g}, head {lr_head:g})")
        rep = comparison.rep_dot_config(args.steps, lr_head, 1, encoder, lr_encoder or 1e-5, 8, args.eval_every, "dev")
        settings = comparison.ComparisonSettings(methods=("rep_dot",), rep_dot=rep, **base)
        if encoder != "frozen":
            inputs = inputs or encoder_inputs(config, args.workdir, tasks, data["example_ids"])
            settings = comparison.ComparisonSettings(methods=("rep_dot",), rep_dot=rep, encoder_inputs=inputs, **base)
        t0 = time.perf_counter()
        out = comparison.compare(data, test_idx, settings)["methods"]["rep_dot"]
        seconds = time.perf_counter() - t0
        if encoder == "frozen":
            method = RepDot(data["task_example_last_hidden"], data["task_example_count"], data["example_last_hidden"],
                            RepDotConfig(steps=args.steps, lr_head=lr_head, eval_every=args.eval_every))
            rows_m = np.ones(len(tasks), bool)
            rows_m[test_idx] = False
            state = method.fit(ColumnChunks(data["Z"], rows_m))
            curve = list(zip(np.asarray(state.eval_steps_E).tolist(), np.asarray(state.dev_f1_SxE)[0].tolist()))
        else:
            runs = os.path.join(args.workdir, "predict", "rep_dot")
            latest = max((os.path.join(runs, d) for d in os.listdir(runs)), key=os.path.getmtime)
            curve = _curve(latest)
        rows[label] = dict(out["pooled"], auc=out["auc"], seconds=seconds, curve=curve)
        print(f"{label}: rmse {out['pooled']['rmse']:.4f} f1 {out['pooled']['f1']:.3f} auc {out['auc']:.3f} "
              f"in {seconds:.1f}s", flush=True)

    report = {"matrix": os.path.relpath(matrix, args.workdir), "shape": list(data["Z"].shape),
              "test_tasks": [tasks[i] for i in test_idx], "steps": args.steps, "eval_every": args.eval_every,
              "k": args.k, "seeds": args.seeds, "machine": f"{os.cpu_count()}-core CPU ({platform.machine()})",
              "rows": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    text = render(report)
    print(text)
    if args.write:
        write_section(text)


def render(report: dict) -> str:
    lines = [SECTION, "",
             f"Matrix {report['matrix']} ({report['shape'][0]} tasks x {report['shape'][1]} upstream examples), "
             f"{len(report['test_tasks'])} test tasks (a seeded 30%), k = {report['k']}, {report['seeds']} seeds; "
             f"every rep_dot variant trains {report['steps']} steps of 8 task examples (each with a forgotten and a "
             f"kept upstream example) and keeps the step of the best F1 on held-out training tasks, chosen every "
             f"{report['eval_every']} steps; {report['machine']}. Protocol and rep_dot as the paper's final code "
             "runs them (AuCson/low-rank-forgetting), with this project's uniform draws of k distinct observed "
             "columns. `python benchmarks/rep_dot_encoders.py --workdir=W --config=configs/demo.py --write`.", "",
             "| method | RMSE (pooled) | F1 (pooled) | AUC (row mean) | seconds | dev F1 over steps |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in report["rows"].items():
        curve = ", ".join(f"{s}: {f:.2f}" for s, f in r["curve"][::max(1, len(r["curve"]) // 5)]) if r["curve"] else ""
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        lines.append(f"| {name} | {r['rmse']:.4f} | {r['f1']:.3f} | {auc} | {r['seconds']:.1f} | {curve} |")
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if SECTION in doc:
        start = doc.index(SECTION)
        rest = doc[start + len(SECTION):]
        end = rest.find("\n## ")
        doc = doc[:start] + text + (rest[end + 1:] if end >= 0 else "")
    elif "\n## Forgetting as lost answers" in doc:  # beside the other prediction figures
        at = doc.index("\n## Forgetting as lost answers") + 1
        doc = doc[:at] + text + "\n" + doc[at:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
