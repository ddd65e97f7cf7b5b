"""What every command shares: failing with a clear message, progress bars, quiet libraries."""

import logging
import os
import sys
from typing import NoReturn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(command: str, message: str, code: int = 1) -> NoReturn:
    """Ends the command with a one-line error on stderr and a non-zero exit status."""
    print(f"forgetting-jax {command}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    for noisy in ("absl", "jax._src", "datasets", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
