"""`forgetting-jax pretrain`: pre-train the base model on a corpus (the demo's upstream model).

  forgetting-jax pretrain --config=configs/demo.py --workdir=W [--config.pretrain.steps=100 ...]

Writes W/base/<fingerprint>/ (orbax parameters, an HF model directory, metrics.jsonl; see
train/loop.py). A finished base with the same fingerprint is reused; an interrupted one resumes.
"""

import logging

from absl import flags

from forgetting_jax.commands.common import check_experiment_args, define_experiment_flags, fail, setup_logging

define_experiment_flags()
FLAGS = flags.FLAGS

log = logging.getLogger("forgetting_jax.pretrain")


def main(argv):
    check_experiment_args("pretrain", argv)
    setup_logging()
    from forgetting_jax.train.distributed import setup_process

    setup_process(FLAGS.config, FLAGS.workdir)
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.config import ConfigError
    from forgetting_jax.train.loop import pretrain

    from forgetting_jax.utils.lock import WorkspaceLocked, workspace_lock

    try:
        with workspace_lock(FLAGS.workdir, "pretrain"):
            base = pretrain(FLAGS.config, FLAGS.workdir)
    except (DataError, ConfigError, ValueError, FileNotFoundError, WorkspaceLocked) as err:
        fail("pretrain", str(err))
    log.info("base model: %s (HF directory %s)", base.directory, base.model_dir)
    print(base.model_dir)
