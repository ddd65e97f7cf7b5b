"""Training runs: the base model (imported or pre-trained) and one fine-tuning run per task.

Entry points (all in-process; compiled steps are cached, so many tasks of one shape compile once):
  base_model(config, workdir)          -> BaseModel   model.base: hf (import model.hf_dir) | pretrain
  pretrain(config, workdir)            -> BaseModel   next-token loss on every token of corpus chunks,
                                                      from random weights or from model.hf_dir
  finetune(config, workdir, task, base) -> RunResult  loss on response tokens; best by validation;
                                                      optionally with other examples mixed into its
                                                      batches (a `mixture`: replay/mixture.py)

Workspace layout (W = workdir; <fp> = the fingerprint of everything that changes the result):
  W/base/<fp>/                 a base model
      params/                  orbax checkpoint of the fp32 parameters (restores onto any mesh)
      model/                   HF directory (pre-trained bases; an imported base is its own hf_dir)
      checkpoints/, metrics.jsonl   the pre-training run (resumable; checkpoints removed when done
                                    unless pretrain.keep_checkpoints)
      run.json                 the fingerprint's inputs, written when the run starts
      fingerprint.json         written last: the base is finished
  W/tasks/<task>/<fp>/         one fine-tuning run of one task
      checkpoints/             orbax CheckpointManager: latest TrainState (resume) and the
                               lowest-validation-loss step (removed when done unless keep_checkpoints)
      metrics.jsonl            per step and per validation (see train/metrics.py)
      model/                   HF directory of the best-by-validation parameters: the fine-tuned model
                               (`models.loading.load_model`, `forgetting-jax score --model=` read it)
      run.json, fingerprint.json   as above

A finished directory (fingerprint.json matching) is reused, never retrained. Any changed input
gives another fingerprint, hence another directory: nothing is silently reused or overwritten. A
directory with run.json but no fingerprint.json is an interrupted run of the same inputs; it
resumes from its latest checkpoint and ends where an uninterrupted run ends. Settings that change
only the order of float reductions (mesh, micro_rows, eval_rows, remat, scan, logits chunks) are
not part of the fingerprint.
"""

import collections
import copy
import dataclasses
import functools
import logging
import os
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from forgetting_jax.models.config import ModelConfig, load_hf_config
from forgetting_jax.models.decoder import init_params, param_shapes
from forgetting_jax.models.hf_checkpoint import export_hf_model, load_hf_model
from forgetting_jax.models.loading import load_tokenizer
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train import lora as lora_lib
from forgetting_jax.train.batches import BatchSettings, eval_batches, iterate, make_batches
from forgetting_jax.train.distributed import barrier
from forgetting_jax.train.inputs import corpus_examples, examples_fingerprint, task_examples
from forgetting_jax.train.mesh import batch_parallelism, describe, make_mesh
from forgetting_jax.train.metrics import MetricsLog, peak_flops_per_device
from forgetting_jax.train.optimizer import OptimizerSettings
from forgetting_jax.train.step import CompiledSteps, StepSettings, compiled_steps, flops_per_token
from forgetting_jax.utils.fingerprint import file_fingerprint, fingerprint, task_filename
from forgetting_jax.utils.io import write_json

log = logging.getLogger("forgetting_jax.train")

FORMAT_VERSION = 1
RESULT_SETTINGS = ("method", "steps", "warmup_steps", "batch_size", "batching", "row_length", "max_segments",
                   "grad_clip", "weight_decay", "b1", "b2", "eps", "seed", "eval_every", "export_dtype")


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """A finished base model in the workspace."""

    config: ModelConfig  # with this config's runtime settings (dtype, remat, scan, chunks)
    fingerprint: str
    directory: str  # W/base/<fp>
    params_dir: str  # orbax checkpoint of the parameters
    model_dir: str  # HF directory to score the base model with
    tokenizer_dir: str
    hf_config: dict  # config.json dict that fine-tuned exports start from


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A finished fine-tuning run."""

    task: str
    run_dir: str
    model_dir: str  # HF directory of the fine-tuned model
    fingerprint: str
    reused: bool
    best_step: int | None
    best_val_loss: float | None
    steps: int
    seconds: float


# Settings --------------------------------------------------------------------------------------

def runtime_model_config(model: Any, arch: ModelConfig) -> ModelConfig:
    """`arch` with the config's compute settings (they change speed and memory, not the model)."""
    return arch.replace(param_dtype=model.param_dtype, dtype=model.dtype, remat_policy=model.remat_policy,
                        scan_unroll=1 if model.scan_layers else arch.num_layers,
                        logits_chunks=int(model.logits_chunks),
                        attention_impl=model.get("attention_impl", "auto"))


def result_settings(tc: Any) -> dict:
    """The training settings that change a run's result (its fingerprint's share of them)."""
    out = {key: tc[key] for key in RESULT_SETTINGS}
    lora = tc.method == "lora"
    out["lr"] = tc.lora.lr if lora else tc.lr
    if lora:
        out["lora"] = {k: tc.lora[k] for k in ("rank", "alpha", "dropout")} | {"targets": list(tc.lora.targets)}
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


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str):
    return load_tokenizer(path)


def _is_main() -> bool:
    return jax.process_index() == 0


def _host(tree: Any) -> Any:
    """A (possibly sharded, possibly multi-host) tree as numpy arrays on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _check_tokens(examples: dict, vocab_size: int, what: str) -> None:
    for split, items in examples.items():
        for e in items:
            if len(e) and int(e.ids.max()) >= vocab_size:
                raise ValueError(f"{what} ({split}) example {e.id!r}: token ids exceed the model's vocabulary "
                                 f"({vocab_size}); is the tokenizer the model's tokenizer?")


def _check_lengths(tc: Any, max_length: int, what: str) -> None:
    if max_length > tc.row_length:
        raise ValueError(f"{what}: examples of up to {max_length} tokens do not fit rows of {tc.row_length}")


# The training loop -----------------------------------------------------------------------------

@dataclasses.dataclass
class _Job:
    name: str
    run_dir: str
    steps: CompiledSteps
    frozen: dict
    init_trainable: Callable[[], Any]
    batches: Any
    total_steps: int
    eval_batches: list | None
    eval_every: int
    save_every: int
    log_every: int
    flops_per_token: float
    peak_flops: float | None  # all devices together
    select_best: bool  # the result is the lowest-validation-loss step (else the last step)
    on_step: Callable[[int], None] | None = None
    # (step, trainable parameters after `step` steps): for the starting state and after every step
    after_step: Callable[[int, Any], None] | None = None


def _evaluate(job: _Job, trainable: Any) -> float:
    sums = [job.steps.eval_step(trainable, job.frozen, batch) for batch in job.eval_batches]
    nll = sum(float(s) for s, _ in sums)
    count = sum(float(c) for _, c in sums)
    return nll / max(count, 1.0)


def _execute(job: _Job) -> tuple[Any, dict]:
    """Runs (or resumes) the job; returns (the selected trainable parameters, meta)."""
    from forgetting_jax.commands.common import progress_bar

    evaluating = bool(job.eval_batches) and job.eval_every > 0
    select_best = evaluating and job.select_best
    checkpoints = ckpt_lib.RunCheckpoints(os.path.join(job.run_dir, "checkpoints"), select_best)
    resumed = checkpoints.restore_latest(job.steps.abstract_state)  # damaged steps: the one before
    start = resumed[0] if resumed else 0
    if resumed:
        _, state, meta = resumed
        log.info("%s: resuming from step %d of %d", job.name, start, job.total_steps)
    else:
        state = job.steps.init_state(job.init_trainable())
        meta = {"best_step": None, "best_val_loss": None}
    if job.after_step is not None:
        job.after_step(start, state.params)
    metrics = MetricsLog(os.path.join(job.run_dir, "metrics.jsonl"), start)
    if start == 0 and evaluating:
        metrics.write({"step": 0, "val_loss": _evaluate(job, state.params), "best": False})
    bar = progress_bar(job.total_steps, "step", job.name)
    bar.disable = bar.disable or not _is_main()
    bar.update(start)
    pending: collections.deque = collections.deque()
    window = {"tokens": 0, "seconds": 0.0, "losses": []}
    clock = [time.perf_counter()]

    def emit(item) -> None:
        done, device_metrics, stats = item
        values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        now = time.perf_counter()
        seconds = max(now - clock[0], 1e-9)
        clock[0] = now
        rate = stats.real_tokens / seconds
        mfu = rate * job.flops_per_token / job.peak_flops if job.peak_flops else None
        metrics.write({"step": done, "loss": values["loss"], "lr": values["lr"], "grad_norm": values["grad_norm"],
                       "loss_tokens": int(values["loss_tokens"]), "real_tokens": stats.real_tokens,
                       "examples": stats.examples, "seconds": seconds, "tokens_per_second": rate, "mfu": mfu})
        window["tokens"] += stats.real_tokens
        window["seconds"] += seconds
        window["losses"].append(values["loss"])
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{rate:,.0f}")
        if done % job.log_every == 0 or done == job.total_steps:
            rate = window["tokens"] / max(window["seconds"], 1e-9)
            mfu_text = f"{100 * rate * job.flops_per_token / job.peak_flops:.1f}%" if job.peak_flops else "n/a"
            log.info("%s: step %d/%d loss %.4f lr %.3g grad_norm %.3f tokens/s %s mfu %s", job.name, done,
                     job.total_steps, float(np.mean(window["losses"])), values["lr"], values["grad_norm"],
                     f"{rate:,.0f}", mfu_text)
            window.update(tokens=0, seconds=0.0, losses=[])

    batches = iterate(job.batches, start, job.total_steps, job.steps.batch_sharding, job.steps.settings.micro_batches)
    try:
        for step in range(start, job.total_steps):
            batch, stats = next(batches)
            state, step_metrics = job.steps.train_step(state, job.frozen, batch)
            if step == start:
                clock[0] = time.perf_counter()  # the first call compiles; time from its dispatch on
            pending.append((step + 1, step_metrics, stats))
            while len(pending) > 1:
                emit(pending.popleft())
            done = step + 1
            last = done == job.total_steps
            evaluate = evaluating and (done % job.eval_every == 0 or last)
            save = last or (job.save_every > 0 and done % job.save_every == 0)
            if evaluate or save:
                while pending:
                    emit(pending.popleft())
                val_loss = None
                if evaluate:
                    val_loss = _evaluate(job, state.params)
                    best = select_best and (meta["best_val_loss"] is None or val_loss < meta["best_val_loss"])
                    if best:
                        meta = {"best_step": done, "best_val_loss": val_loss}
                    metrics.write({"step": done, "val_loss": val_loss, "best": best})
                    log.info("%s: step %d validation loss %.4f%s", job.name, done, val_loss, " (best)" if best else "")
                    save = save or best
                if save:
                    checkpoints.save(done, state, meta, val_loss if select_best else None)
                clock[0] = time.perf_counter()
            if job.on_step is not None:
                job.on_step(done)
            if job.after_step is not None:
                job.after_step(done, state.params)
        while pending:
            emit(pending.popleft())
        checkpoints.wait()
        best_step = meta.get("best_step")
        if select_best and best_step is not None and best_step != int(state.step):
            params = checkpoints.restore(best_step, job.steps.abstract_state)[0].params
        else:
            params = state.params
            meta = dict(meta, best_step=meta.get("best_step") or int(state.step))
        return params, meta
    finally:
        batches.close()
        bar.close()
        metrics.close()
        checkpoints.wait()
        checkpoints.close()


def _run_record(directory: str, inputs: dict) -> None:
    if _is_main():
        os.makedirs(directory, exist_ok=True)
        write_json(os.path.join(directory, "run.json"), inputs)


def _finish(directory: str, fp: str, inputs: dict, keep_checkpoints: bool, **extra: Any) -> None:
    ckpt_lib.write_fingerprint(directory, fp, inputs, **extra)
    checkpoints = os.path.join(directory, "checkpoints")
    if not keep_checkpoints and _is_main() and os.path.isdir(checkpoints):
        shutil.rmtree(checkpoints, ignore_errors=True)
    barrier(f"finished {fp}")  # the other processes read what process 0 just wrote


def _peak(mesh: Mesh, tc: Any) -> float | None:
    per_device = peak_flops_per_device(mesh.devices.flat[0], float(tc.peak_flops or 0.0))
    return None if per_device is None else per_device * mesh.devices.size


# Base models -----------------------------------------------------------------------------------

def _hf_identity(hf_dir: str, mode: str) -> dict:
    """What identifies an imported HF directory: its config.json and its weights' bytes (content)
    or their names, sizes and modification times (metadata)."""
    names = sorted(n for n in os.listdir(hf_dir) if n.endswith((".safetensors", ".safetensors.index.json")))
    total = sum(os.path.getsize(os.path.join(hf_dir, n)) for n in names)
    if mode == "auto":
        mode = "content" if total < (2 << 30) else "metadata"
    if mode not in ("content", "metadata"):
        raise ValueError(f"model.hf_fingerprint {mode!r} is not one of auto, content, metadata")
    files = {}
    for name in names:
        path = os.path.join(hf_dir, name)
        info = os.stat(path)
        files[name] = file_fingerprint(path) if mode == "content" else [info.st_size, info.st_mtime_ns]
    return {"config": file_fingerprint(os.path.join(hf_dir, "config.json")), "files": files, "mode": mode}


def _architecture(model: Any, tokenizer) -> ModelConfig:
    """The ModelConfig of a model pre-trained from scratch, from config.model and the tokenizer."""
    vocab = int(model.vocab_size) or len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"model.vocab_size {vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return ModelConfig(
        family=model.family, vocab_size=vocab, hidden_size=int(model.hidden_size), num_layers=int(model.num_layers),
        num_heads=int(model.num_heads), num_kv_heads=int(model.num_kv_heads), head_dim=int(model.head_dim),
        mlp_dim=int(model.mlp_dim), norm_eps=float(model.norm_eps), rope_theta=float(model.rope_theta),
        tie_embeddings=bool(model.tie_embeddings), max_position_embeddings=int(model.max_position_embeddings),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, param_dtype=model.param_dtype)


def _base_from_record(config: Any, directory: str, record: dict) -> BaseModel:
    model_dir = record["model_dir"] if record.get("imported") else os.path.join(directory, "model")
    arch, hf = load_hf_config(model_dir, param_dtype=config.model.param_dtype)
    arch = arch.replace(tie_embeddings=bool(record["tie_embeddings"]))
    tokenizer_dir = record.get("tokenizer_dir") or model_dir
    return BaseModel(config=runtime_model_config(config.model, arch), fingerprint=record["fingerprint"],
                     directory=directory, params_dir=os.path.join(directory, "params"), model_dir=model_dir,
                     tokenizer_dir=tokenizer_dir, hf_config=hf)


def import_base(config: Any, workdir: str) -> BaseModel:
    """model.hf_dir as the base: its parameters copied once into an orbax checkpoint of the workspace."""
    hf_dir = os.path.abspath(config.model.hf_dir)
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise ValueError(f"model.hf_dir={hf_dir}: not a Hugging Face model directory (no config.json)")
    tokenizer_dir = os.path.abspath(config.model.tokenizer or hf_dir)
    inputs = {"kind": "import", "version": FORMAT_VERSION, "hf_dir": _hf_identity(hf_dir, config.model.hf_fingerprint),
              "param_dtype": config.model.param_dtype}
    fp = fingerprint(inputs)
    directory = os.path.join(workdir, "base", fp)
    record = ckpt_lib.read_fingerprint(directory)
    if record is not None and record.get("fingerprint") == fp:
        return _base_from_record(config, directory, dict(record, tokenizer_dir=tokenizer_dir))
    log.info("importing %s as the base model into %s", hf_dir, directory)
    arch, params, _ = load_hf_model(hf_dir, param_dtype=config.model.param_dtype)
    _run_record(directory, inputs)
    ckpt_lib.save_params(os.path.join(directory, "params"), params)
    ckpt_lib.write_fingerprint(directory, fp, inputs, imported=True, model_dir=hf_dir,
                               tie_embeddings=arch.tie_embeddings)
    return _base_from_record(config, directory, {"fingerprint": fp, "imported": True, "model_dir": hf_dir,
                                                 "tie_embeddings": arch.tie_embeddings, "tokenizer_dir": tokenizer_dir})


def base_model(config: Any, workdir: str, mesh: Mesh | None = None) -> BaseModel:
    """The base model of `config` (reused when finished): model.base=hf imports model.hf_dir;
    model.base=pretrain pre-trains on config.pretrain.corpus."""
    if config.model.base == "pretrain":
        return pretrain(config, workdir, mesh)
    if config.model.base != "hf":
        raise ValueError(f"model.base {config.model.base!r} is not one of hf, pretrain")
    if not config.model.hf_dir:
        raise ValueError(f"config {config.get('name', '')!r} fine-tunes an imported model: set "
                         "--config.model.hf_dir=DIR (a Hugging Face model directory)")
    return import_base(config, workdir)


def load_base_params(base: BaseModel, shardings: Any) -> Any:
    """The base parameters restored onto the mesh of `shardings` (a tree like the parameters)."""
    return ckpt_lib.restore_params(base.params_dir, ckpt_lib.abstract_tree(param_shapes(base.config), shardings))


def pretrain(config: Any, workdir: str, mesh: Mesh | None = None, on_step: Callable[[int], None] | None = None
             ) -> BaseModel:
    """Pre-trains the base model on config.pretrain.corpus (next-token loss on every token).

    Starts from random weights in the architecture of config.model, or, with model.hf_dir, from
    that model's weights (continued pre-training; its tokenizer unless model.tokenizer is set).
    """
    pc = config.pretrain
    if pc.method != "full":
        raise ValueError("pretrain.method must be full")
    from forgetting_jax.data.demo import tokenizer_path

    start_from = import_base(config, workdir) if config.model.hf_dir else None
    if start_from is not None:
        tokenizer_dir = start_from.tokenizer_dir
        arch = start_from.config.replace(param_dtype=config.model.param_dtype)
    else:
        tokenizer_dir = os.path.abspath(config.model.tokenizer or tokenizer_path())
    tokenizer = _tokenizer(tokenizer_dir)
    if start_from is None:
        arch = _architecture(config.model, tokenizer)
    data = corpus_examples(pc, tokenizer, int(pc.row_length))
    _check_tokens(data, arch.vocab_size, "corpus")
    arch_fields = {k: v for k, v in dataclasses.asdict(arch).items()
                   if k not in ("dtype", "remat_policy", "scan_unroll", "logits_chunks", "attention_impl")}
    inputs = {"kind": "pretrain", "version": FORMAT_VERSION, "model": arch_fields,
              "init": start_from.fingerprint if start_from is not None else "random",
              "tokenizer": file_fingerprint(tokenizer_dir), "train_data": examples_fingerprint(data["train"]),
              "validation_data": examples_fingerprint(data["validation"]), "train": result_settings(pc),
              "compute_dtype": config.model.dtype}
    fp = fingerprint(inputs)
    directory = os.path.join(workdir, "base", fp)
    record = ckpt_lib.read_fingerprint(directory)
    if record is not None and record.get("fingerprint") == fp:
        log.info("base model %s is already pre-trained; reusing it", directory)
        return _base_from_record(config, directory, record)
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    model_config = runtime_model_config(config.model, arch)
    settings, batch_settings = step_settings(pc, mesh)
    steps = compiled_steps(model_config, settings, mesh)
    _run_record(directory, inputs)
    log.info("pre-training %s (%.1fM parameters) on %d chunks (%d tokens) for %d steps on %s; run in %s",
             arch.family, arch.num_params / 1e6, len(data["train"]), sum(len(e) for e in data["train"]),
             pc.steps, describe(mesh), directory)

    def init_trainable():
        if start_from is not None:
            return load_base_params(start_from, steps.trainable_shardings)
        init = jax.jit(lambda key: init_params(model_config, key)[0], out_shardings=steps.trainable_shardings)
        return init(jax.random.key(int(pc.seed)))

    job = _Job(name="pretrain", run_dir=directory, steps=steps, frozen={}, init_trainable=init_trainable,
               batches=make_batches(data["train"], batch_settings), total_steps=int(pc.steps),
               eval_batches=(eval_batches(data["validation"], settings.eval_rows, settings.row_length,
                                          int(pc.max_segments), steps.eval_batch_sharding)
                             if pc.eval_every and data["validation"] else None),
               eval_every=int(pc.eval_every), save_every=int(pc.save_every), log_every=int(pc.log_every),
               flops_per_token=flops_per_token(model_config, settings.row_length), peak_flops=_peak(mesh, pc),
               select_best=False, on_step=on_step)
    params, meta = _execute(job)
    ckpt_lib.save_params(os.path.join(directory, "params"), params)
    host_params = _host(params)  # a collective on several processes: every process takes part
    if _is_main():
        export_hf_model(os.path.join(directory, "model"), arch, host_params,
                        base_config=start_from.hf_config if start_from is not None else None,
                        tokenizer_dir=tokenizer_dir, dtype=pc.export_dtype or None)
    _finish(directory, fp, inputs, bool(pc.keep_checkpoints), imported=False,
            tie_embeddings=arch.tie_embeddings, steps=int(pc.steps))
    return _base_from_record(config, directory, {"fingerprint": fp, "tie_embeddings": arch.tie_embeddings})


# Fine-tuning -----------------------------------------------------------------------------------

def task_run_dir(workdir: str, task: str, fp: str) -> str:
    return os.path.join(workdir, "tasks", task_filename(task), fp)


@dataclasses.dataclass(frozen=True)
class FinetunePlan:
    """What `finetune` would do: the run's fingerprint, directory, inputs and data."""

    task: str
    fingerprint: str
    run_dir: str
    inputs: dict
    examples: dict  # {"train": [Example], "validation": [Example]}

    @property
    def finished(self) -> bool:
        return ckpt_lib.is_finished(self.run_dir, self.fingerprint)


def mixed_settings(tc: Any, mixture: Any | None) -> Any:
    """config.train of a run with `mixture` mixed in: its optimizer steps are the mixture's."""
    if mixture is None:
        return tc
    if tc.batching != "examples":
        raise ValueError("a mixture of examples needs train.batching='examples'")
    tc = copy.deepcopy(tc)
    tc.steps = int(mixture.total_steps(int(tc.steps)))
    return tc


def plan_finetune(config: Any, workdir: str, task: str, base: BaseModel, mixture: Any | None = None
                  ) -> FinetunePlan:
    """The fingerprint and run directory of fine-tuning `base` on `task` with config.train.

    mixture: other examples mixed into the batches (see `finetune`); its `inputs` are part of the
    fingerprint, so a run with a mixture never shares its directory with a plain run.
    """
    tc = mixed_settings(config.train, mixture)
    _check_lengths(tc, int(config.data.max_length), f"task {task}")
    tokenizer = _tokenizer(base.tokenizer_dir)
    data = task_examples(config.data, task, tokenizer)
    _check_tokens(data, base.config.vocab_size, f"task {task}")
    inputs = {"kind": "finetune", "version": FORMAT_VERSION, "base": base.fingerprint, "task": task,
              "train_data": examples_fingerprint(data["train"]),
              "validation_data": examples_fingerprint(data["validation"]),
              "train": result_settings(tc), "compute_dtype": config.model.dtype}
    if mixture is not None:
        inputs["mixture"] = mixture.inputs
    fp = fingerprint(inputs)
    return FinetunePlan(task, fp, task_run_dir(workdir, task, fp), inputs, data)


def finetune(config: Any, workdir: str, task: str, base: BaseModel | None = None, mesh: Mesh | None = None,
             on_step: Callable[[int], None] | None = None, mixture: Any | None = None) -> RunResult:
    """Fine-tunes the base model on `task` (config.train), or reuses the finished identical run.

    base: the result of `base_model` (computed when None). on_step(step) runs after every step.
    mixture: other examples in the task's batches (replay/mixture.py `ReplayMixture`), an object with
      inputs                      JSON-able: what the mixture adds to the run's fingerprint
      total_steps(steps)          the run's optimizer steps, given train.steps
      batches(examples, settings, run_dir)  per-step batches (`.batch(step) -> PackedRows`) of the
                                  task's train examples with the others mixed in
      after_step(step, params_fn) called with the starting step (fresh or resumed) and after every
                                  step; params_fn() gives the model parameters after `step` steps
    """
    started = time.perf_counter()
    tc = mixed_settings(config.train, mixture)
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    base = base_model(config, workdir, mesh) if base is None else base
    plan = plan_finetune(config, workdir, task, base, mixture)
    fp, run_dir, inputs, data = plan.fingerprint, plan.run_dir, plan.inputs, plan.examples
    record = ckpt_lib.read_fingerprint(run_dir)
    if record is not None and record.get("fingerprint") == fp:
        log.info("task %s: reusing the finished run %s", task, run_dir)
        return RunResult(task, run_dir, os.path.join(run_dir, "model"), fp, True, record.get("best_step"),
                         record.get("best_val_loss"), int(record.get("steps", tc.steps)),
                         time.perf_counter() - started)
    others = [d for d in _listdir(os.path.join(workdir, "tasks", task_filename(task))) if d != fp]
    if others:
        log.info("task %s: %d run(s) with other settings exist (%s); training a new one in %s", task, len(others),
                 ", ".join(others[:3]), run_dir)

    settings, batch_settings = step_settings(tc, mesh)
    model_config = base.config
    steps = compiled_steps(model_config, settings, mesh)
    _run_record(run_dir, inputs)
    lora = settings.lora
    if lora is None:
        frozen: dict = {}

        def init_trainable():
            return load_base_params(base, steps.trainable_shardings)
    else:
        base_params = load_base_params(base, steps.frozen_shardings["base"])
        factors, seeds = lora_lib.init_lora(model_config, lora, jax.random.key(int(tc.seed)))
        frozen = {"base": base_params, "seeds": jax.device_put(seeds, steps.frozen_shardings["seeds"])}

        def init_trainable():
            return jax.device_put(factors, steps.trainable_shardings)
    log.info("fine-tuning on task %s: %d train / %d validation examples%s, %s, %d steps on %s; run in %s", task,
             len(data["train"]), len(data["validation"]), "" if mixture is None else f" ({mixture.describe()})",
             tc.method, tc.steps, describe(mesh), run_dir)
    trainable_fraction = 1.0 if lora is None else lora_lib.trainable_count(factors) / model_config.num_params
    if mixture is None:
        batches, after_step = make_batches(data["train"], batch_settings), None
    else:
        batches = mixture.batches(data["train"], batch_settings, run_dir)

        def after_step(done: int, trainable: Any) -> None:
            full = (lambda: trainable) if lora is None else (lambda: lora_lib.merge(frozen["base"], trainable, lora))
            mixture.after_step(done, full)
    job = _Job(name=f"finetune {task}", run_dir=run_dir, steps=steps, frozen=frozen, init_trainable=init_trainable,
               batches=batches, total_steps=int(tc.steps),
               eval_batches=(eval_batches(data["validation"], settings.eval_rows, settings.row_length,
                                          int(tc.max_segments), steps.eval_batch_sharding)
                             if tc.eval_every and data["validation"] else None),
               eval_every=int(tc.eval_every), save_every=int(tc.save_every), log_every=int(tc.log_every),
               flops_per_token=flops_per_token(model_config, settings.row_length, trainable_fraction),
               peak_flops=_peak(mesh, tc), select_best=True, on_step=on_step, after_step=after_step)
    params, meta = _execute(job)
    if lora is not None:
        params = lora_lib.merge(frozen["base"], params, lora)
    host_params = _host(params)  # a collective on several processes: every process takes part
    if _is_main():
        export_hf_model(os.path.join(run_dir, "model"), model_config, host_params, base_config=base.hf_config,
                        tokenizer_dir=base.tokenizer_dir, dtype=tc.export_dtype or None)
    _finish(run_dir, fp, inputs, bool(tc.keep_checkpoints), best_step=meta.get("best_step"),
            best_val_loss=meta.get("best_val_loss"), steps=int(tc.steps))
    return RunResult(task, run_dir, os.path.join(run_dir, "model"), fp, False, meta.get("best_step"),
                     meta.get("best_val_loss"), int(tc.steps), time.perf_counter() - started)


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []

