"""`forgetting-jax run`: the whole pipeline, from a config to the forgetting matrix and its report.

  forgetting-jax run --config=configs/demo.py --workdir=W [--tasks=a,b] [--redo=c]

Writes W/matrix/forgetting.npz (Z, ft_nll, base_nll, tasks, example_ids, example_sources), one
file per finished row under W/matrix/rows/, W/analysis/ (fits.json, figures) and W/report.md.
Rerunning the same command reuses everything finished; a killed run continues where it stopped.
"""

import logging

from absl import flags

from forgetting_jax.commands.common import check_experiment_args, define_experiment_flags, fail, setup_logging

define_experiment_flags()
FLAGS = flags.FLAGS
_TASKS = flags.DEFINE_list("tasks", [], "Run only these tasks (default: all of config.data.tasks).")
_REDO = flags.DEFINE_list("redo", [], "Recompute these tasks' fine-tuning runs and rows.")
_ANALYZE = flags.DEFINE_bool("analyze", True, "Write the analysis and report after the matrix.")

log = logging.getLogger("forgetting_jax.run")


def main(argv):
    check_experiment_args("run", argv)
    setup_logging()
    from forgetting_jax.train.distributed import setup_process

    setup_process(FLAGS.config, FLAGS.workdir)
    from forgetting_jax.matrix.pipeline import run_pipeline
    from forgetting_jax.matrix.report import print_summary
    from forgetting_jax.utils.lock import WorkspaceLocked, workspace_lock

    try:
        with workspace_lock(FLAGS.workdir, "run"):
            summary = run_pipeline(FLAGS.config, FLAGS.workdir, tasks=_TASKS.value, redo=_REDO.value,
                                   analyze=_ANALYZE.value)
    except (ValueError, FileNotFoundError, KeyError, WorkspaceLocked) as err:
        fail("run", str(err))
    print_summary(summary)
