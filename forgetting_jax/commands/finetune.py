"""`forgetting-jax finetune`: fine-tune the base model on one task.

  forgetting-jax finetune --config=configs/demo.py --workdir=W --task=add [--config.train.lr=1e-5 ...]

The base is config.model.hf_dir (imported into the workspace once) or, for configs that pre-train
(model.base=pretrain), the pre-trained base (trained first when missing). Writes
W/tasks/<task>/<fingerprint>/ with metrics.jsonl and model/ (the best-by-validation parameters
as an HF directory; see train/finetune.py) and prints the model directory. A finished run with the
same fingerprint is reused; an interrupted one resumes.

With --config.replay.weights_file=F.jsonl (a forecast file of `forgetting-jax forecast`; {task} in the path is
replaced by the task), the task is fine-tuned with replay: upstream examples of config.matrix drawn
by the file's replay weights at replay.ratio, the steps and kept step by replay.protocol
(replay/weights_file.py).
"""

import logging

from absl import flags

from forgetting_jax.commands.common import define_experiment_flags, run_experiment

define_experiment_flags()
FLAGS = flags.FLAGS
_TASK = flags.DEFINE_string("task", None, "The task to fine-tune on.")
REQUIRED = ("task",)  # listed as required by --help

log = logging.getLogger("forgetting_jax.finetune")


def main(argv):
    def body(experiment):
        from forgetting_jax.train.finetune import finetune

        if not experiment.replay.weights_file:
            return finetune(experiment, FLAGS.workdir, _TASK.value)
        from forgetting_jax.replay.protocol import protocol
        from forgetting_jax.replay.weights_file import forecast_mixture
        from forgetting_jax.train.base import base_model
        from forgetting_jax.train.mesh import make_mesh

        experiment = protocol(experiment).run_config(experiment)
        mesh = make_mesh(experiment.mesh)
        base = base_model(experiment, FLAGS.workdir, mesh)
        mixture = forecast_mixture(experiment, FLAGS.workdir, _TASK.value, base)
        return finetune(experiment, FLAGS.workdir, _TASK.value, base=base, mesh=mesh, mixture=mixture)

    result = run_experiment("finetune", argv, body, required=REQUIRED)
    best = ("" if result.best_val_loss is None
            else f", best validation loss {result.best_val_loss:.4f} at step {result.best_step}")
    log.info("task %s: %s%s", _TASK.value, "reused " if result.reused else "fine-tuned ", result.model_dir + best)
    print(result.model_dir)
