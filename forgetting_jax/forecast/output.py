"""The files of a forecast: F.jsonl, one line per upstream example, most forgotten first
({"id", "predicted", "rank", "replay_weight", "observed" for the scored ones}), and
F.summary.json beside it (what was scored, checked, chosen and verified). Both atomic; process 0
writes."""

import json
import os

from forgetting_jax.analysis.stats import json_safe
from forgetting_jax.utils.io import write_json, write_text
from forgetting_jax.utils.runtime import is_main


def summary_path(output: str) -> str:
    """F.summary.json for F.jsonl (F.summary.json beside any other name)."""
    stem = output[:-len(".jsonl")] if output.endswith(".jsonl") else output
    return stem + ".summary.json"


def write_forecast(output: str, forecast) -> str:
    """Writes the two files of `forecast` (forecast/forecast.py Forecast); returns the summary's path."""
    path = summary_path(output)
    if is_main():
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        write_text(output, "".join(json.dumps(line) + "\n" for line in forecast.lines()))
        write_json(path, json_safe(dict(forecast.summary, output=output)))
    return path
