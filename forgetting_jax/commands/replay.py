"""`forgetting-jax replay`: fine-tune new tasks with upstream examples replayed by strategy (none,
random, predicted, ground truth, online, top-k, and the final code's baselines gt_mir:N,
ppl_median, grad_prod_neg) and compare the forgetting they prevent.

  forgetting-jax replay --config=configs/demo.py --workdir=W [--strategies=none,random] [--tasks=a,b]
  forgetting-jax replay --config=configs/demo.py --workdir=W \
      --strategies=none,random,gt_mir:4,ppl_median,grad_prod_neg,predicted:knn

By default the runs follow the paper's final code (replay.protocol=final: replay runs train
floor(train.steps (1 + r)) steps, every run keeps its last step, 10,000 upstream examples or at most
half held out); --config.replay.protocol=project gives the equal-steps variant.

Needs the forgetting matrix of config.data.tasks (`forgetting-jax run`); builds or reuses it first.
Writes the experiment's replay/results.json, replay/table.md, replay/replay.png and a section of
its report.md (W/experiments/<name>/), and copies of them at W/replay/ and W/report.md.
Every run is fingerprinted and reused: rerunning the command retrains nothing finished, and a
killed run continues where it stopped.
"""

from absl import flags

from forgetting_jax.commands.common import define_experiment_flags, run_experiment

define_experiment_flags()
FLAGS = flags.FLAGS
_STRATEGIES = flags.DEFINE_list("strategies", [], "Strategies to run (default: config.replay.strategies): none, "
                                "random, predicted:METHOD, ground_truth, online:METHOD, gt_mir:N, ppl_median, "
                                "grad_prod_neg, top:STRATEGY.")
_TASKS = flags.DEFINE_list("tasks", [], "Test tasks to run (default: config.replay.test_tasks).")


def main(argv):
    def body(experiment):
        from forgetting_jax.replay.experiment import run_replay

        return run_replay(experiment, FLAGS.workdir, strategies=_STRATEGIES.value, tasks=_TASKS.value)

    _print(run_experiment("replay", argv, body), FLAGS.workdir)


def _print(results: dict, workdir: str) -> None:
    import os

    lines = ["", f"replay ({results['settings']['protocol']} protocol): {len(results['tasks'])} test tasks x "
             f"{len(results['strategies'])} strategies in {results['seconds']:.0f}s; held-out forgetting (mean NLL "
             "increase, lower is better):"]
    for name in results["strategies"]:
        e = results["summary"][name]
        ci = "" if e["ci_low"] is None else f"  CI [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
        lines.append(f"  {name:<28} {e['mean']:+.4f}{ci}")
    if results.get("exact_match"):
        lines.append("  exact-match drop on the held-out prompts (lower is better):")
        for name in results["strategies"]:
            e = results["exact_match"]["summary"][name]
            lines.append(f"  {name:<28} {'n/a' if e['mean'] is None else format(e['mean'], '.4f')}")
    for t in results["tests"]:
        p_t = "n/a" if t["t_p"] is None else f"{t['t_p']:.3g}"
        p_w = "n/a" if t["wilcoxon_p"] is None else f"{t['wilcoxon_p']:.3g}"
        lines.append(f"  {t['strategy']} vs {t['reference']}: {t['difference_mean']:+.4f} (paired t p {p_t}, "
                     f"Wilcoxon p {p_w})")
    experiment = results.get("experiment_dir") or workdir
    lines.append(f"  results  {os.path.join(experiment, 'replay', 'results.json')}   table and figure in "
                 f"{os.path.join(experiment, 'replay')}, section in {os.path.join(experiment, 'report.md')} "
                 f"(copies in {os.path.join(workdir, 'replay')} and {os.path.join(workdir, 'report.md')})")
    print("\n".join(lines), flush=True)
