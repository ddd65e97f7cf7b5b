"""`forgetting-jax run`: the whole pipeline, from a config to the forgetting matrix and its report.

  forgetting-jax run --config=configs/demo.py --workdir=W [--tasks=a,b] [--redo=c]

Writes one file per finished row and the experiment's own directory W/experiments/<name>/
(<name>: config.name) with its matrix, analysis and report; W/matrix/forgetting.npz and
W/report.md are copies of the most recent run's (the files: WORKSPACE.md). Rerunning the same
command reuses everything finished; a killed run continues where it stopped.
"""

import logging

from absl import flags

from forgetting_jax.commands.common import define_experiment_flags, run_experiment

define_experiment_flags()
FLAGS = flags.FLAGS
_TASKS = flags.DEFINE_list("tasks", [], "Run only these tasks (default: all of config.data.tasks).")
_REDO = flags.DEFINE_list("redo", [], "Recompute these tasks' fine-tuning runs and rows.")
_ANALYZE = flags.DEFINE_bool("analyze", True, "Write the analysis and report after the matrix.")

log = logging.getLogger("forgetting_jax.run")


def main(argv):
    def body(experiment):
        from forgetting_jax.matrix.run import run_pipeline

        return run_pipeline(experiment, FLAGS.workdir, tasks=_TASKS.value, redo=_REDO.value, analyze=_ANALYZE.value)

    from forgetting_jax.matrix.report import print_summary

    print_summary(run_experiment("run", argv, body))
