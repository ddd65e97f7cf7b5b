"""Running a `forgetting-jax` command in the test process (tests only)."""

import json
import sys

from absl import logging as absl_logging

from forgetting_jax import cli


def keep_pytest_stderr() -> None:
    """absl's handler holds the stderr of when absl was imported (pytest's capture); the commands'
    logging setup closes it, which must not close pytest's capture file. Call in setup_module."""
    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


def run_cli(*args) -> int:
    """The exit status of `forgetting-jax ARGS...` run in this process."""
    argv = ["forgetting-jax", *args]
    saved, sys.argv = sys.argv, argv  # ml_collections reads --config.* overrides from sys.argv
    try:
        cli.run(argv)
    except SystemExit as exit_:
        return exit_.code or 0
    finally:
        sys.argv = saved
    return 0


def write_jsonl(path, records) -> str:
    """`records` (dicts, or raw lines as str) written one per line to `path`; returns str(path)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)
