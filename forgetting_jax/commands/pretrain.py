"""`forgetting-jax pretrain`: pre-train the base model on a corpus (the demo's upstream model).

  forgetting-jax pretrain --config=configs/demo.py --workdir=W [--config.pretrain.steps=100 ...]

Writes W/base/<fingerprint>/ (orbax parameters, an HF model directory, metrics.jsonl; see
train/loop.py). A finished base with the same fingerprint is reused; an interrupted one resumes.
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

log = logging.getLogger("forgetting_jax.pretrain")


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
        fail("pretrain", f"unexpected arguments: {' '.join(argv[1:])}", 2)
    if FLAGS.config is None:
        fail("pretrain", "--config is required (e.g. --config=configs/demo.py)", 2)
    if not FLAGS.workdir:
        fail("pretrain", "--workdir is required", 2)
    setup_logging()
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.config import ConfigError
    from forgetting_jax.train.loop import pretrain

    try:
        base = pretrain(FLAGS.config, FLAGS.workdir)
    except (DataError, ConfigError, ValueError, FileNotFoundError) as err:
        fail("pretrain", str(err))
    log.info("base model: %s (HF directory %s)", base.directory, base.model_dir)
    print(base.model_dir)
