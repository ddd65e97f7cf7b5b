"""Training metrics: a JSON-lines log in the run directory, throughput and an MFU estimate.

metrics.jsonl holds one object per optimizer step
  {"step", "loss", "lr", "grad_norm", "loss_tokens", "real_tokens", "examples", "seconds",
   "tokens_per_second", "mfu"}
and one per validation {"step", "val_loss", "best"} (step 0: the starting model, never selected).
"step" counts optimizer steps taken. A resumed run first drops the lines after the step it
resumes from, so the file always reads like one uninterrupted run. Only process 0 writes it.

Beside it, the same figures as TensorBoard scalars (utils/tensorboard.py), in
events.out.tfevents.0.forgetting_jax: train/loss, train/learning_rate, train/grad_norm,
train/tokens_per_second, train/mfu and validation/loss by step. The event file is rewritten from
the kept lines when a run resumes, so it too reads like one uninterrupted run; `tensorboard
--logdir=W` shows every run of a workspace.
"""

import json
import math
import os

import jax

from forgetting_jax.utils.runtime import is_main
from forgetting_jax.utils.tensorboard import ScalarWriter

# metrics.jsonl field -> TensorBoard tag
SCALARS = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
           "tokens_per_second": "train/tokens_per_second", "mfu": "train/mfu", "val_loss": "validation/loss"}


def scalars(record: dict) -> dict[str, float]:
    """The TensorBoard scalars of one metrics.jsonl record (finite numbers only)."""
    out = {}
    for key, tag in SCALARS.items():
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
    return out

# Dense bf16 peak FLOP/s per device, by device kind (substring match, longest first).
PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 125e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5": 459e12, "TPU v4": 275e12,
}


def peak_flops_per_device(device: jax.Device | None = None, override: float = 0.0) -> float | None:
    """The configured peak, else the table's entry for the device kind; None when unknown (CPU)."""
    if override and override > 0:
        return float(override)
    kind = (device or jax.devices()[0]).device_kind
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):
        if name.lower() in kind.lower():
            return PEAK_FLOPS[name]
    return None


class MetricsLog:
    """Appends JSON lines to `path` (process 0 only), after truncating lines past `resume_step`."""

    def __init__(self, path: str, resume_step: int = 0):
        self.path = path
        self.enabled = is_main()
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        kept = []
        if resume_step > 0 and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break  # a line cut by a kill ends the readable part
                    if record.get("step", 0) > resume_step:
                        break
                    kept.append(line if line.endswith("\n") else line + "\n")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self._file = open(path, "a", encoding="utf-8")
        self.events = ScalarWriter(os.path.dirname(os.path.abspath(path)))
        self.events.rewrite((r.get("step", 0), scalars(r)) for r in map(json.loads, kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            self.events.add(int(record.get("step", 0)), scalars(record))

    def close(self) -> None:
        if self.enabled and not self._file.closed:
            self._file.close()
            self.events.close()


def read_metrics(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
