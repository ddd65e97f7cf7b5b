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
from ml_collections import config_flags

from forgetting_jax.commands.common import fail, setup_logging

# Shared with the other training commands; defined once per process, whichever is imported first.
if "config" not in flags.FLAGS:
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py); override fields with "
                                    "--config.section.field=value.", lock_config=True)
if "workdir" not in flags.FLAGS:
    flags.DEFINE_string("workdir", None, "Workspace directory.")
FLAGS = flags.FLAGS
_TASK = flags.DEFINE_string("task", None, "The task to fine-tune on.")

log = logging.getLogger("forgetting_jax.finetune")


def _forget_config_overrides() -> None:
    """Drops the --config.* flags that parsing this run defined, so that another run in the same
    process (`cli.run` called again) can define them anew."""
    for flag_name in [n for n in FLAGS if n.startswith("config.")]:
        delattr(FLAGS, flag_name)


def main(argv):
    try:
        _main(argv)
    finally:
        _forget_config_overrides()


def _main(argv):
    if len(argv) > 1:
        fail("finetune", f"unexpected arguments: {' '.join(argv[1:])}", 2)
    if FLAGS.config is None:
        fail("finetune", "--config is required (e.g. --config=configs/demo.py)", 2)
    for name in ("workdir", "task"):
        if not FLAGS[name].value:
            fail("finetune", f"--{name} is required", 2)
    setup_logging()
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.config import ConfigError
    from forgetting_jax.models.hf_checkpoint import CheckpointError
    from forgetting_jax.train.loop import finetune

    try:
        result = finetune(FLAGS.config, FLAGS.workdir, _TASK.value)
    except KeyError as err:
        fail("finetune", str(err.args[0]) if err.args else str(err))
    except (DataError, ConfigError, CheckpointError, ValueError, FileNotFoundError) as err:
        fail("finetune", str(err))
    best = "" if result.best_val_loss is None else f", best validation loss {result.best_val_loss:.4f} at step {result.best_step}"
    log.info("task %s: %s%s", _TASK.value, "reused " if result.reused else "fine-tuned ", result.model_dir + best)
    print(result.model_dir)
