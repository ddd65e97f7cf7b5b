"""`forgetting-jax finetune`: fine-tune the base model on one task.

  forgetting-jax finetune --config=configs/demo.py --workdir=W --task=add [--config.train.lr=1e-5 ...]

The base is config.model.hf_dir (imported into the workspace once) or, for configs that pre-train
(model.base=pretrain), the pre-trained base (trained first when missing). Writes
W/tasks/<task>/<fingerprint>/ with metrics.jsonl and model/ (the best-by-validation parameters
as an HF directory; see train/loop.py) and prints the model directory. A finished run with the
same fingerprint is reused; an interrupted one resumes.
"""

import logging

from absl import flags

from forgetting_jax.commands.common import check_experiment_args, define_experiment_flags, fail, setup_logging

define_experiment_flags()
FLAGS = flags.FLAGS
_TASK = flags.DEFINE_string("task", None, "The task to fine-tune on.")
REQUIRED = ("task",)  # listed as required by --help

log = logging.getLogger("forgetting_jax.finetune")


def main(argv):
    check_experiment_args("finetune", argv)
    if not _TASK.value:
        fail("finetune", "--task is required", 2)
    setup_logging()
    from forgetting_jax.train.distributed import setup_process

    setup_process(FLAGS.config, FLAGS.workdir)
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.config import ConfigError
    from forgetting_jax.models.hf_checkpoint import CheckpointError
    from forgetting_jax.train.loop import finetune
    from forgetting_jax.utils.lock import WorkspaceLocked, workspace_lock

    try:
        with workspace_lock(FLAGS.workdir, "finetune"):
            result = finetune(FLAGS.config, FLAGS.workdir, _TASK.value)
    except KeyError as err:
        fail("finetune", str(err.args[0]) if err.args else str(err))
    except (DataError, ConfigError, CheckpointError, ValueError, FileNotFoundError, WorkspaceLocked) as err:
        fail("finetune", str(err))
    best = "" if result.best_val_loss is None else f", best validation loss {result.best_val_loss:.4f} at step {result.best_step}"
    log.info("task %s: %s%s", _TASK.value, "reused " if result.reused else "fine-tuned ", result.model_dir + best)
    print(result.model_dir)
