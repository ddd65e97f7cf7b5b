"""The micro demo: configs/demo.py shrunk to a one-layer float32 model, 3 tasks, 50 upstream
examples and a few steps, so that the whole pipeline (pre-training, base scores, fine-tuning, rows,
replay) runs in seconds. The one definition the pipeline, workspace, replay, scale and documented-command tests
build on: the same shapes everywhere, so that their steps (pre-training, fine-tuning, scoring)
compile once per pytest process and are shared by every test that runs the pipeline in-process.

  micro_config()                                   the ConfigDict (tasks add, uppercase, parity)
  micro_config(tasks=("add",), **{"train.lr": 1e-4})  other tasks, other fields ("section.field")
  micro_experiment(...)                            the same, parsed (what library entry points take)
  cli_overrides()                                  the same as --config.* flags of a command line
  copy_workspace(W, DEST)                          a copy of a workspace (the session's built matrix:
                                                   the `micro_matrix` fixture of tests/conftest.py)

float32 rather than the demo's bfloat16: a CPU emulates bfloat16 (slower, not faster), and runs
compared with each other (parallel against one-at-a-time tasks) agree to float32 tolerance.
"""

import shutil

from config_files import config_with

TASKS = ("add", "uppercase", "parity")
# Every field the micro demo changes in configs/demo.py, "section.field": value.
OVERRIDES = {
    "matrix.num_upstream": 50, "model.hidden_size": 64, "model.num_layers": 1, "model.num_heads": 2,
    "model.num_kv_heads": 2, "model.mlp_dim": 128, "model.dtype": "float32", "pretrain.steps": 12,
    "pretrain.batch_size": 4, "pretrain.micro_rows": 4, "pretrain.max_examples": 400, "train.steps": 6,
    "train.eval_every": 3, "train.log_every": 3, "predict.seeds": 3, "predict.rep_dot_steps": 100,
}
# Test tasks of the replay experiment (not rows of the matrix) and its held-out upstream examples.
REPLAY_TEST_TASKS = ("divide", "to_hex")
REPLAY = {"replay.test_tasks": REPLAY_TEST_TASKS, "replay.strategies": ("none", "random"), "replay.ratio": 0.25,
          "replay.k": 5, "replay.num_heldout": 15, "replay.online_fraction": 0.3}


def micro_config(tasks=TASKS, **changes):
    """configs/demo.py shrunk by OVERRIDES and REPLAY, with data.tasks = `tasks`, then `changes`
    ({"section.field": value}, e.g. {"train.lr": 1e-4, "train.lora.rank": 4}) applied last."""
    return config_with({**OVERRIDES, **REPLAY, "data.tasks": tuple(tasks), **changes})


def micro_experiment(tasks=TASKS, **changes):
    """micro_config(tasks, **changes) parsed: the Experiment that library entry points take."""
    from forgetting_jax.experiment import as_experiment

    return as_experiment(micro_config(tasks, **changes))


def _flag_value(value) -> str:
    return ",".join(value) if isinstance(value, (tuple, list)) else str(value)


def flag_values(tasks=TASKS, **changes) -> dict[str, str]:
    """{"section.field": command-line value} of the micro config (lists as comma lists, which the
    experiment commands split)."""
    values = {"data.tasks": tuple(tasks), **OVERRIDES, **REPLAY, **changes}
    return {key: _flag_value(value) for key, value in values.items()}


def cli_overrides(tasks=TASKS, **changes) -> list[str]:
    """The same micro config as --config.* flags of a `forgetting-jax` command line."""
    return [f"--config.{key}={value}" for key, value in flag_values(tasks, **changes).items()]


def copy_workspace(source: str, destination: str) -> str:
    """A copy of the workspace `source` (e.g. the session's `micro_matrix`) at `destination`."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".lock"))
    return destination
