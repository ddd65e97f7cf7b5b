"""What every command shares: argument checks, logging and quiet libraries, process setup, the
workspace lock, and expected errors ending the command in one clear line.

  check_args(command, argv, required)   stray arguments and missing required flags
  run_experiment(command, argv, body)   an experiment command (--config, --workdir): the config
                                        parsed and validated, logging, the distributed runtime,
                                        the workspace lock, then body(experiment)
  reported_errors(command)              a context in which the errors a user can act on (bad data,
                                        config, checkpoint, missing file, workspace locked) end the
                                        command with `forgetting-jax CMD: error: ...`
"""

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Sequence

if TYPE_CHECKING:
    from forgetting_jax.experiment import Experiment

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


def check_args(command: str, argv: Sequence[str], required: Sequence[str] = ()) -> None:
    """Fails (status 2) on stray arguments or a missing required flag (absl flag names)."""
    from absl import flags

    if len(argv) > 1:
        fail(command, f"unexpected arguments: {' '.join(argv[1:])}", 2)
    for name in required:
        if flags.FLAGS[name].value in (None, "", [], ()):
            fail(command, f"--{name} is required", 2)


def _nearest_existing(path: str) -> str:
    """`path` or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def path_problem(path: str, kind: str) -> str | None:
    """Why `path` cannot be written as a `kind` ("file" or "directory"), or None: a directory where
    a file is wanted (or the reverse), a parent that is a file, a place without write permission
    (or on a read-only filesystem). Checked before any work, so a long run never fails at its end."""
    if kind == "file" and os.path.isdir(path):
        return "it is a directory; name a file"
    if kind == "directory" and os.path.exists(path) and not os.path.isdir(path):
        return "it is a file, not a directory"
    if os.path.exists(path):
        where = path if kind == "directory" else os.path.dirname(os.path.abspath(path))
        return None if os.access(where, os.W_OK | os.X_OK) else f"{where} cannot be written (permission denied)"
    ancestor = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(ancestor):
        return f"{ancestor} is a file, so {path} cannot be created"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} cannot be written (permission denied), so {path} cannot be created"
    return None


def check_path(command: str, flag: str, path: str, kind: str) -> None:
    """Fails in one line (status 2) naming the flag, the path and the reason when `path` cannot be
    written as a `kind` (see `path_problem`)."""
    problem = path_problem(path, kind)
    if problem is not None:
        fail(command, f"--{flag}={path}: {problem}", 2)


def start_file_command(command: str, argv: Sequence[str], required: Sequence[str], output: str,
                       suffix: str) -> None:
    """The start of a command that reads a model and a data file and writes one `suffix` file
    (score, generate): its flags checked, logging set up, the processes joined (a multi-process
    run configured by the environment: JAX_COORDINATOR_ADDRESS, ...)."""
    check_args(command, argv, required)
    if not output.endswith(suffix):
        fail(command, f"--output={output}: the output must be a {suffix} file", 2)
    check_path(command, "output", output, "file")
    setup_logging()
    from forgetting_jax.utils.runtime import setup_process

    setup_process()


def model_and_data_errors() -> tuple[type, ...]:
    """The errors of reading a model directory and a data file, reported in one line."""
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.config import ConfigError
    from forgetting_jax.models.hf_checkpoint import CheckpointError
    from forgetting_jax.models.safetensors_io import SafetensorsError

    return (DataError, ConfigError, CheckpointError, SafetensorsError, OSError)


def _expected_errors() -> tuple[type, ...]:
    from forgetting_jax.analysis.matrix_file import MatrixFileError
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.config import ConfigError
    from forgetting_jax.models.hf_checkpoint import CheckpointError
    from forgetting_jax.utils.lock import WorkspaceLocked

    # OSError: a file that cannot be read or written (permission, a read-only filesystem, no space),
    # its message naming the file.
    return (DataError, ConfigError, CheckpointError, MatrixFileError, WorkspaceLocked, ValueError,
            OSError, KeyError)


@contextlib.contextmanager
def reported_errors(command: str) -> Iterator[None]:
    """Errors a user can act on end the command with one line (the message, whitespace folded)."""
    try:
        yield
    except _expected_errors() as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        fail(command, " ".join(message.split()))


def run_experiment(command: str, argv: Sequence[str], body: Callable[[Any], Any], required: Sequence[str] = (),
                   lock: bool = True) -> Any:
    """The skeleton of an experiment command: arguments checked (with `required` flags), the config
    parsed and validated, logging, the process set up (XLA flags, the distributed runtime, the
    compilation cache), the workspace locked (W/.lock), then body(experiment); expected errors end
    it in one line."""
    from absl import flags

    experiment = check_experiment_args(command, argv)
    check_args(command, argv, required)
    check_path(command, "workdir", flags.FLAGS.workdir, "directory")
    setup_logging()
    from forgetting_jax.utils.runtime import setup_process
    from forgetting_jax.utils.lock import workspace_lock

    setup_process(experiment, flags.FLAGS.workdir)
    with reported_errors(command):
        with workspace_lock(flags.FLAGS.workdir, command) if lock else contextlib.nullcontext():
            return body(experiment)


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


def check_experiment_args(command: str, argv: list[str]) -> "Experiment":
    """Fails clearly on stray arguments, a missing --config / --workdir or a config field the
    schema does not allow (one line naming the field, e.g. `config field train.batching='exmaples'
    is not one of examples, rows`); returns the parsed config (`experiment.parse`), whose sections
    (experiment.train, experiment.model, ...) are typed and validated."""
    from absl import flags

    from forgetting_jax.experiment import ConfigError, parse

    if len(argv) > 1:
        fail(command, f"unexpected arguments: {' '.join(argv[1:])}", 2)
    if flags.FLAGS.config is None:
        fail(command, "--config is required (e.g. --config=configs/demo.py)", 2)
    if not flags.FLAGS.workdir:
        fail(command, "--workdir is required", 2)
    config = flags.FLAGS.config
    if type(config).__name__ == "_ErrorConfig":  # ml_collections' stand-in for a file it could not load
        error = getattr(config, "_error", None)
        fail(command, f"--config={flags.FLAGS['config'].config_filename}: the config file could not be loaded "
                      f"({type(error).__name__}: {' '.join(str(error).split())})", 2)
    split_config_lists()
    try:
        return parse(config)
    except ConfigError as err:
        fail(command, str(err), 2)


def split_config_lists() -> None:
    """--config.data.tasks=a,b,c (read by ml_collections as the one item "a,b,c") becomes the items
    a, b, c: for every list or tuple field given on the command line (see
    `experiment.split_comma_lists`)."""
    from absl import flags

    from forgetting_jax.experiment import split_comma_lists

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
