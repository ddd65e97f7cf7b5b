"""`forgetting-jax replay`: fine-tune new tasks with upstream examples replayed by strategy (none,
random, predicted, ground truth, online, top-k) and compare the forgetting they prevent.

  forgetting-jax replay --config=configs/demo.py --workdir=W [--strategies=none,random] [--tasks=a,b]

Needs the forgetting matrix of config.data.tasks (`forgetting-jax run`); builds or reuses it first.
Writes W/replay/results.json, W/replay/table.md, W/replay/replay.png and a section of W/report.md.
Every run is fingerprinted and reused: rerunning the command retrains nothing finished, and a
killed run continues where it stopped.
"""

from absl import flags

from forgetting_jax.commands.common import check_experiment_args, define_experiment_flags, fail, setup_logging

define_experiment_flags()
FLAGS = flags.FLAGS
_STRATEGIES = flags.DEFINE_list("strategies", [], "Strategies to run (default: config.replay.strategies).")
_TASKS = flags.DEFINE_list("tasks", [], "Test tasks to run (default: config.replay.test_tasks).")


def main(argv):
    check_experiment_args("replay", argv)
    if "replay" not in FLAGS.config:
        fail("replay", "the config has no replay section (start it from train.settings.default_config())", 2)
    setup_logging()
    from forgetting_jax.replay.experiment import run_replay
    from forgetting_jax.train.distributed import setup_process

    setup_process(FLAGS.config, FLAGS.workdir)
    from forgetting_jax.utils.lock import WorkspaceLocked, workspace_lock

    try:
        with workspace_lock(FLAGS.workdir, "replay"):
            results = run_replay(FLAGS.config, FLAGS.workdir, strategies=_STRATEGIES.value, tasks=_TASKS.value)
    except (ValueError, FileNotFoundError, KeyError, WorkspaceLocked) as err:
        fail("replay", str(err))
    _print(results, FLAGS.workdir)


def _print(results: dict, workdir: str) -> None:
    import os

    lines = ["", f"replay: {len(results['tasks'])} test tasks x {len(results['strategies'])} strategies in "
             f"{results['seconds']:.0f}s; held-out forgetting (mean NLL increase, lower is better):"]
    for name in results["strategies"]:
        e = results["summary"][name]
        ci = "" if e["ci_low"] is None else f"  CI [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
        lines.append(f"  {name:<28} {e['mean']:+.4f}{ci}")
    for t in results["tests"]:
        p_t = "n/a" if t["t_p"] is None else f"{t['t_p']:.3g}"
        p_w = "n/a" if t["wilcoxon_p"] is None else f"{t['wilcoxon_p']:.3g}"
        lines.append(f"  {t['strategy']} vs {t['reference']}: {t['difference_mean']:+.4f} (paired t p {p_t}, "
                     f"Wilcoxon p {p_w})")
    lines.append(f"  results  {os.path.join(workdir, 'replay', 'results.json')}   table and figure in "
                 f"{os.path.join(workdir, 'replay')}, section in {os.path.join(workdir, 'report.md')}")
    print("\n".join(lines), flush=True)
