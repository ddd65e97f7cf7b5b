"""`forgetting-jax pretrain`: pre-train the base model on a corpus (the demo's upstream model).

  forgetting-jax pretrain --config=configs/demo.py --workdir=W [--config.pretrain.steps=100 ...]

Writes W/base/<fingerprint>/ (orbax parameters, an HF model directory, metrics.jsonl; see
train/base.py). A finished base with the same fingerprint is reused; an interrupted one resumes.
"""

import logging

from absl import flags

from forgetting_jax.commands.common import define_experiment_flags, run_experiment

define_experiment_flags()
FLAGS = flags.FLAGS

log = logging.getLogger("forgetting_jax.pretrain")


def main(argv):
    def body(experiment):
        from forgetting_jax.train.base import pretrain

        return pretrain(experiment, FLAGS.workdir)

    base = run_experiment("pretrain", argv, body)
    log.info("base model: %s (HF directory %s)", base.directory, base.model_dir)
    print(base.model_dir)
