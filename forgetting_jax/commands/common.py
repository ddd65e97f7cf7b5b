"""What every command shares: failing with a clear message, progress bars, quiet libraries."""

import logging
import os
import sys
from typing import NoReturn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found ..." (torch is not needed)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

_NOISY = ("absl", "jax._src", "datasets", "httpx", "urllib3", "filelock")
_QUIETEST = ("matplotlib", "PIL")  # font-cache and font-search notes


def quiet_libraries() -> None:
    """Libraries' start-up notes off (before they are imported): nothing a user could act on."""
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for noisy in _QUIETEST:
        logging.getLogger(noisy).setLevel(logging.ERROR)


def fail(command: str, message: str, code: int = 1) -> NoReturn:
    """Ends the command with a one-line error on stderr and a non-zero exit status."""
    print(f"forgetting-jax {command}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def define_experiment_flags() -> None:
    """--config (an ml_collections config file) and --workdir, shared by the experiment commands;
    defined once per process, whichever command is imported first."""
    from absl import flags
    from ml_collections import config_flags

    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py); override fields with "
                                        "--config.section.field=value.", lock_config=True)
    if "workdir" not in flags.FLAGS:
        flags.DEFINE_string("workdir", None, "Workspace directory (see WORKSPACE.md).")


def check_experiment_args(command: str, argv: list[str]) -> None:
    """Fails clearly on stray arguments or a missing --config / --workdir."""
    from absl import flags

    if len(argv) > 1:
        fail(command, f"unexpected arguments: {' '.join(argv[1:])}", 2)
    if flags.FLAGS.config is None:
        fail(command, "--config is required (e.g. --config=configs/demo.py)", 2)
    if not flags.FLAGS.workdir:
        fail(command, "--workdir is required", 2)
    split_config_lists()


def split_config_lists() -> None:
    """--config.data.tasks=a,b,c (read by ml_collections as the one item "a,b,c") becomes the items
    a, b, c: for every list or tuple field given on the command line (see
    `train.settings.split_comma_lists`)."""
    from absl import flags

    from forgetting_jax.train.settings import split_comma_lists

    overridden = [name.removeprefix("config.") for name in flags.FLAGS
                  if name.startswith("config.") and flags.FLAGS[name].present]
    split_comma_lists(flags.FLAGS.config, overridden)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (robust to redirection)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging() -> None:
    """INFO lines of this package on stderr, `HH:MM:SS LEVEL message`; noisy libraries quieter."""
    package = logging.getLogger("forgetting_jax")
    package.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
        package.addHandler(handler)
        package.propagate = False
    quiet_libraries()
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def progress_bar(total: int, unit: str, desc: str):
    """A tqdm bar on stderr (disabled when stderr is not a terminal and FJ_PROGRESS=0)."""
    from tqdm.auto import tqdm

    disable = os.environ.get("FJ_PROGRESS", "1") == "0"
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=disable, file=sys.stderr)
