"""From an experiment's train section to what a run needs: static step and batch shapes, the
model's compute settings, the settings that enter a run's fingerprint, and input checks."""

import copy
import dataclasses
from typing import Any

from jax.sharding import Mesh

from forgetting_jax.models.config import scan_unroll
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.train import lora as lora_lib
from forgetting_jax.train.batches import BatchSettings
from forgetting_jax.train.mesh import batch_parallelism
from forgetting_jax.train.metrics import peak_flops_per_device
from forgetting_jax.train.optimizer import OptimizerSettings
from forgetting_jax.train.step import StepSettings

# The train settings that change a run's result (with the learning rate, and LoRA's shape).
RESULT_SETTINGS = ("method", "steps", "warmup_steps", "batch_size", "batching", "row_length", "max_segments",
                   "grad_clip", "weight_decay", "b1", "b2", "eps", "seed", "eval_every", "export_dtype")


def runtime_model_config(model: Any, arch: ModelConfig) -> ModelConfig:
    """`arch` with the config's compute settings (they change speed and memory, not the model)."""
    return arch.replace(param_dtype=model.param_dtype, dtype=model.dtype, remat_policy=model.remat_policy,
                        scan_unroll=scan_unroll(model, arch.num_layers), logits_chunks=int(model.logits_chunks),
                        attention_impl=model.attention_impl)


def result_settings(tc: Any) -> dict:
    """The training settings that change a run's result (its fingerprint's share of them)."""
    out = {key: getattr(tc, key) for key in RESULT_SETTINGS}
    if getattr(tc, "result", "best") != "best":  # runs kept at their best step keep their fingerprints
        out["result"] = tc.result
    lora = tc.method == "lora"
    out["lr"] = tc.lora.lr if lora else tc.lr
    if lora:
        out["lora"] = ({k: getattr(tc.lora, k) for k in ("rank", "alpha", "dropout")}
                       | {"targets": list(tc.lora.targets)})
    return out


def step_settings(tc: Any, mesh: Mesh) -> tuple[StepSettings, BatchSettings]:
    """Static step and batch shapes for a train config on a mesh."""
    if tc.method not in ("full", "lora"):
        raise ValueError(f"train.method {tc.method!r} is not one of full, lora")
    parallel = batch_parallelism(mesh)
    rows = -(-max(int(tc.micro_rows), 1) // parallel) * parallel
    if tc.batching == "examples":
        micro_batches = -(-int(tc.batch_size) // rows)
    elif tc.batch_size % rows:
        raise ValueError(f"batch_size {tc.batch_size} rows is not a multiple of micro_rows {rows} "
                         f"(rounded to the mesh's data x fsdp = {parallel})")
    else:
        micro_batches = tc.batch_size // rows
    lora = tc.method == "lora"
    optimizer = OptimizerSettings(lr=float(tc.lora.lr if lora else tc.lr), steps=int(tc.steps),
                                  warmup_steps=int(tc.warmup_steps), b1=float(tc.b1), b2=float(tc.b2),
                                  eps=float(tc.eps), weight_decay=float(tc.weight_decay),
                                  grad_clip=float(tc.grad_clip))
    lora_settings = None
    if lora:
        lora_settings = lora_lib.LoraSettings(rank=int(tc.lora.rank), alpha=float(tc.lora.alpha),
                                              dropout=float(tc.lora.dropout), targets=tuple(tc.lora.targets))
    eval_rows = -(-max(int(tc.eval_rows), 1) // parallel) * parallel
    step = StepSettings(micro_batches=micro_batches, micro_rows=rows, row_length=int(tc.row_length),
                        optimizer=optimizer, lora=lora_settings, seed=int(tc.seed), eval_rows=eval_rows)
    batch = BatchSettings(batching=tc.batching, batch_size=int(tc.batch_size), micro_batches=micro_batches,
                          micro_rows=rows, row_length=int(tc.row_length), max_segments=int(tc.max_segments),
                          seed=int(tc.seed))
    return step, batch


def mixed_settings(tc: Any, mixture: Any | None) -> Any:
    """config.train of a run with `mixture` mixed in: its optimizer steps are the mixture's."""
    if mixture is None:
        return tc
    if tc.batching != "examples":
        raise ValueError("a mixture of examples needs train.batching='examples'")
    steps = int(mixture.total_steps(int(tc.steps)))
    if dataclasses.is_dataclass(tc):
        return dataclasses.replace(tc, steps=steps)
    tc = copy.deepcopy(tc)
    tc.steps = steps
    return tc


def peak_flops(mesh: Mesh, tc: Any) -> float | None:
    """Peak FLOP/s of all devices of `mesh` together (train.peak_flops per device, else by kind)."""
    per_device = peak_flops_per_device(mesh.devices.flat[0], float(tc.peak_flops or 0.0))
    return None if per_device is None else per_device * mesh.devices.size


def check_tokens(examples: dict, vocab_size: int, what: str) -> None:
    """A clear error when token ids exceed the model's vocabulary (the wrong tokenizer)."""
    for split, items in examples.items():
        for e in items:
            if len(e) and int(e.ids.max()) >= vocab_size:
                raise ValueError(f"{what} ({split}) example {e.id!r}: token ids exceed the model's vocabulary "
                                 f"({vocab_size}); is the tokenizer the model's tokenizer?")


def check_lengths(tc: Any, max_length: int, what: str) -> None:
    if max_length > tc.row_length:
        raise ValueError(f"{what}: examples of up to {max_length} tokens do not fit rows of {tc.row_length}")
