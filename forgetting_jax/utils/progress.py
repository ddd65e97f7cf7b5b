"""Progress bars of long work (training steps, scoring batches) on stderr."""

import os
import sys


def progress_bar(total: int, unit: str, desc: str):
    """A tqdm bar on stderr (disabled when stderr is not a terminal and FJ_PROGRESS=0)."""
    from tqdm.auto import tqdm

    disable = os.environ.get("FJ_PROGRESS", "1") == "0"
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=disable, file=sys.stderr)
