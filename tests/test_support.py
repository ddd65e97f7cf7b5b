"""Small helpers several test files share: a command in a fresh process, the package's warnings."""

import contextlib
import logging
import os
import subprocess
import sys
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(command: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m forgetting_jax COMMAND ARGS` in a fresh process (as users run it), from the
    checkout's root."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "forgetting_jax", command, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def package_warnings() -> Iterator[list[str]]:
    """WARNING messages of the `forgetting_jax` loggers while the block runs (whatever
    setup_logging did to propagation)."""
    handler = _Records()
    logger = logging.getLogger("forgetting_jax")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
