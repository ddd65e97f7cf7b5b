"""Entry point of `forgetting-jax <command> [--flags]`.

Each command lives in `forgetting_jax.commands.<name>`: a module that defines its absl flags at
import time and a `main(argv)` function. Only the chosen command's module is imported, so the
flags of one command never leak into another's `--help`.
"""

import importlib
import sys

COMMANDS = {
    "score": "Per-example mean NLL of a data file under a model (design.md contract).",
    "analyze": "Low-rank fits, statistics and figures of a forgetting matrix.",
    "predict": "Matrix-completion protocol: predict unseen tasks' rows from k observed entries.",
    "pretrain": "Pre-train a model on language-model text (the demo's upstream model).",
    "finetune": "Fine-tune the base model on one task.",
    "run": "The whole pipeline: base scores, per-task fine-tuning, rescoring, the matrix, a report.",
    "replay": "The replay experiment: fine-tune with predicted-forgotten examples replayed.",
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: forgetting-jax <command> [--flags]   (forgetting-jax <command> --help)", ""]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Dispatches to the command named by argv[1]."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        print(f"forgetting-jax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    try:
        module = importlib.import_module(f"forgetting_jax.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"forgetting_jax.commands.{name}":
            raise
        print(f"forgetting-jax: command {name!r} is not available in this build", file=sys.stderr)
        sys.exit(2)
    from absl import app, flags

    command_argv = [f"forgetting-jax {name}"] + argv[2:]
    saved_argv, sys.argv = sys.argv, command_argv  # ml_collections reads --config.* overrides here
    flags.FLAGS.unparse_flags()  # a second run in one process starts from the defaults again
    try:
        app.run(module.main, argv=command_argv)
    finally:
        sys.argv = saved_argv
        for flag_name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, flag_name)  # defined by this run's overrides; the next run redefines them
