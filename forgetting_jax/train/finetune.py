"""Fine-tuning runs: one task, one task with replay mixed in, or P tasks at once.

  plan_finetune(config, workdir, task, base)  -> FinetunePlan  the run's fingerprint, directory, data
  finetune(config, workdir, task, base)       -> RunResult     loss on response tokens; best step by
                                                               validation; optionally with other
                                                               examples mixed into its batches (a
                                                               `mixture`: replay/mixture.py)
  finetune_group(config, workdir, tasks, base, task_mesh, P) -> [RunResult]   P tasks in one
                                                               compiled step (train/multitask.py)

All of them run train/driver.py's loop; a run is the same whichever way it was trained (same
fingerprint, same files), so a finished run is reused by either path.

A run lives in W/tasks/<task>/<fp>/ (<fp>: the fingerprint of everything that changes its result;
its files: WORKSPACE.md); its model/ is exported only when asked (`export=True`:
`forgetting-jax finetune`, matrix.keep_models).

The result's parameters (best step, LoRA merged) stay on the mesh in `RunResult.params`, so the
matrix pipeline scores them where they are, with no export and reload. Settings that change only
the order of float reductions (mesh, micro_rows, eval_rows, remat, scan, logits chunks, tasks
trained at once) are not part of the fingerprint.
"""

import dataclasses
import logging
import os
import shutil
import time
from typing import Any, Callable, Sequence

import jax
from jax.sharding import Mesh

from forgetting_jax.experiment import Experiment
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train import driver
from forgetting_jax.train import lora as lora_lib
from forgetting_jax.train.base import FORMAT_VERSION, BaseModel, base_model, load_base_params, tokenizer
from forgetting_jax.train.batches import make_batches, validation_rows
from forgetting_jax.train.inputs import examples_fingerprint, task_examples
from forgetting_jax.train.mesh import describe, make_mesh
from forgetting_jax.train.recipe import (check_lengths, check_tokens, mixed_settings, peak_flops, result_settings,
                                         step_settings)
from forgetting_jax.train.step import compiled_steps, flops_per_token
from forgetting_jax.utils.fingerprint import fingerprint, task_filename
from forgetting_jax.utils.runtime import barrier, is_main

log = logging.getLogger("forgetting_jax.train")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A finished fine-tuning run."""

    task: str
    run_dir: str
    model_dir: str | None  # HF directory of the fine-tuned model (None: not exported)
    fingerprint: str
    reused: bool
    best_step: int | None
    best_val_loss: float | None
    steps: int
    seconds: float
    params: Any = None  # the fine-tuned model's parameters on the mesh (None for a reused run)


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

    @property
    def model_dir(self) -> str:
        return os.path.join(self.run_dir, "model")


def task_run_dir(workdir: str, task: str, fp: str) -> str:
    return os.path.join(workdir, "tasks", task_filename(task), fp)


def plan_finetune(config: Experiment, workdir: str, task: str, base: BaseModel, mixture: Any | None = None
                  ) -> FinetunePlan:
    """The fingerprint and run directory of fine-tuning `base` on `task` with config.train.

    mixture: other examples mixed into the batches (see `finetune`); its `inputs` are part of the
    fingerprint, so a run with a mixture never shares its directory with a plain run.
    """
    tc = mixed_settings(config.train, mixture)
    check_lengths(tc, int(config.data.max_length), f"task {task}")
    data = task_examples(config.data, task, tokenizer(base.tokenizer_dir))
    check_tokens(data, base.config.vocab_size, f"task {task}")
    inputs = {"kind": "finetune", "version": FORMAT_VERSION, "base": base.fingerprint, "task": task,
              "train_data": examples_fingerprint(data["train"]),
              "validation_data": examples_fingerprint(data["validation"]),
              "train": result_settings(tc), "compute_dtype": config.model.dtype}
    if mixture is not None:
        inputs["mixture"] = mixture.inputs
    fp = fingerprint(inputs)
    return FinetunePlan(task, fp, task_run_dir(workdir, task, fp), inputs, data)


def finetune(config: Experiment, workdir: str, task: str, base: BaseModel | None = None, mesh: Mesh | None = None,
             hooks: Sequence[driver.Hook] = (), mixture: Any | None = None,
             plan: FinetunePlan | None = None, export: bool = True) -> RunResult:
    """Fine-tunes the base model on `task` (config.train), or reuses the finished identical run.

    base: the result of `base_model` (computed when None). hooks: train/driver.py Hooks of the run.
    plan: `plan_finetune`'s result when the caller has it (the task's data is read once).
    export: write the result as an HF directory (model/); else it is only in RunResult.params.
    mixture: other examples in the task's batches (replay/mixture.py `ReplayMixture`), an object with
      inputs                      JSON-able: what the mixture adds to the run's fingerprint
      total_steps(steps)          the run's optimizer steps, given train.steps
      batches(examples, settings, run_dir)  per-step batches (`.batch(step) -> PackedRows`) of the
                                  task's train examples with the others mixed in
      after_step(step, params_fn) called with the starting step (fresh or resumed) and after every
                                  step; params_fn() gives the model parameters after `step` steps
    """
    started = time.perf_counter()
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    base = base_model(config, workdir, mesh) if base is None else base
    plan = plan or plan_finetune(config, workdir, task, base, mixture)
    reused = _reused(plan, started)
    if reused is not None and (reused.model_dir is not None or not export):
        return reused
    if reused is not None:  # finished by a matrix run that did not keep its model (matrix.keep_models off)
        log.warning("task %s: the finished run %s kept no model/; training it again to export one", task,
                    plan.run_dir)
        if is_main():
            shutil.rmtree(plan.run_dir, ignore_errors=True)
        barrier(f"cleared {plan.fingerprint}")
    others = [d for d in _listdir(os.path.dirname(plan.run_dir)) if d != plan.fingerprint]
    if others:
        log.info("task %s: %d run(s) with other settings exist (%s); training a new one in %s", task, len(others),
                 ", ".join(others[:3]), plan.run_dir)
    return _train(config, [plan], base, mesh, 1, started, export, hooks, mixture)[0]


def finetune_group(config: Experiment, workdir: str, tasks: Sequence[str], base: BaseModel, mesh: Mesh,
                   num_tasks: int | None = None, plans: dict[str, FinetunePlan] | None = None,
                   export: bool = True) -> list[RunResult]:
    """Fine-tunes `base` on every task of `tasks` at once (config.train; P = num_tasks slots,
    default len(tasks); `mesh` from multitask.make_task_mesh); finished runs are reused. Returns
    one RunResult per task, in order."""
    started = time.perf_counter()
    num_tasks = num_tasks or len(tasks)
    if len(tasks) > num_tasks:
        raise ValueError(f"{len(tasks)} tasks do not fit a group of {num_tasks}")
    plans = plans or {}
    results: dict[str, RunResult] = {}
    todo = []
    for task in tasks:
        plan = plans.get(task) or plan_finetune(config, workdir, task, base)
        reused = _reused(plan, started)
        if reused is not None:
            results[task] = reused
        else:
            todo.append(plan)
    if todo:
        for result in _train(config, todo, base, mesh, num_tasks, started, export):
            results[result.task] = result
    return [results[t] for t in tasks]


def _reused(plan: FinetunePlan, started: float) -> RunResult | None:
    """The finished run of `plan`, or None."""
    record = ckpt_lib.read_fingerprint(plan.run_dir)
    if record is None or record.get("fingerprint") != plan.fingerprint:
        return None
    log.info("task %s: reusing the finished run %s", plan.task, plan.run_dir)
    model_dir = plan.model_dir if os.path.isdir(plan.model_dir) else None
    return RunResult(plan.task, plan.run_dir, model_dir, plan.fingerprint, True, record.get("best_step"),
                     record.get("best_val_loss"), int(record.get("steps", plan.inputs["train"]["steps"])),
                     time.perf_counter() - started)


def _train(config: Any, plans: list[FinetunePlan], base: BaseModel, mesh: Mesh, num_slots: int, started: float,
           export: bool, hooks: Sequence[driver.Hook] = (), mixture: Any | None = None
           ) -> list[RunResult]:
    """Trains `plans` (at most num_slots) in one group: one task's compiled step for a single
    slot, the P-task step (train/multitask.py) otherwise."""
    tc = mixed_settings(config.train, mixture)
    settings, batch_settings = step_settings(tc, mesh)
    model_config = base.config
    if num_slots == 1:
        single = compiled_steps(model_config, settings, mesh)
        program: driver.Program = driver.SingleTaskProgram(single)
    else:
        from forgetting_jax.train import multitask

        steps = multitask.multitask_steps(model_config, settings, mesh, num_slots)
        single, program = steps.single, multitask.MultiTaskProgram(steps, int(tc.max_segments))
    lora = settings.lora
    if lora is None:
        frozen: Any = {}
        trainable_fraction = 1.0

        def fresh():
            return load_base_params(base, single.trainable_shardings)
    else:
        base_params = load_base_params(base, single.frozen_shardings.base)
        factors, seeds = lora_lib.init_lora(model_config, lora, jax.random.key(int(tc.seed)))
        frozen = lora_lib.LoraFrozen(base_params, jax.device_put(seeds, single.frozen_shardings.seeds))
        trainable_fraction = lora_lib.trainable_count(factors) / model_config.num_params

        def fresh():
            return jax.device_put(factors, single.trainable_shardings)

    def full_params(trainable: Any) -> Any:
        return trainable if lora is None else lora_lib.merge(frozen.base, trainable, lora)

    runs: list[driver.Run | None] = []
    for plan in plans:
        driver.run_record(plan.run_dir, plan.inputs)
        data = plan.examples
        if mixture is None:
            batches, run_hooks = make_batches(data["train"], batch_settings), list(hooks)
        else:
            batches = mixture.batches(data["train"], batch_settings, plan.run_dir)
            run_hooks = [_MixtureHook(mixture, full_params), *hooks]
        eval_rows = validation_rows(data["validation"], settings.eval_rows, settings.row_length,
                                    int(tc.max_segments), int(tc.eval_every))
        runs.append(driver.Run(f"finetune {plan.task}", plan.run_dir, batches, eval_rows, tc.result == "best",
                               run_hooks, divergence_hint=_divergence_hint(tc)))
    runs += [None] * (num_slots - len(plans))
    if num_slots == 1:
        data = plans[0].examples
        log.info("fine-tuning on task %s: %d train / %d validation examples%s, %s, %d steps on %s; run in %s",
                 plans[0].task, len(data["train"]), len(data["validation"]),
                 "" if mixture is None else f" ({mixture.describe()})", tc.method, tc.steps, describe(mesh),
                 plans[0].run_dir)
        label = f"finetune {plans[0].task}"
    else:
        log.info("fine-tuning %d tasks at once (%s; %d slots): %s, %d steps on %s", len(plans),
                 ", ".join(p.task for p in plans), num_slots, tc.method, tc.steps, multitask.describe_task_mesh(mesh))
        label = f"{len(plans)} tasks"
    cadence = driver.Cadence(int(tc.steps), int(tc.eval_every), int(tc.save_every), int(tc.log_every))
    outcomes = driver.train(program, runs, frozen, fresh, cadence,
                            flops_per_token(model_config, settings.row_length, trainable_fraction),
                            peak_flops(mesh, tc), label)
    return [_finish(tc, plan, full_params(params), meta, base, export, started)
            for plan, (params, meta) in zip(plans, outcomes)]


def _divergence_hint(tc: Any) -> str:
    """What to change when a fine-tuning run diverges."""
    lr = "train.lora.lr" if tc.method == "lora" else "train.lr"
    value = tc.lora.lr if tc.method == "lora" else tc.lr
    return f"lower {lr} (now {value:g}) or raise train.warmup_steps (now {tc.warmup_steps})"


class _MixtureHook(driver.Hook):
    """A replay mixture's `after_step(step, params_fn)` (replay/mixture.py), called at the run's
    start and after each step with the full model parameters (LoRA merged)."""

    def __init__(self, mixture: Any, full_params: Callable[[Any], Any]):
        self.mixture, self.full_params = mixture, full_params

    def start(self, step: int, params_fn: Callable[[], Any]) -> None:
        self.after_step(step, params_fn)

    def after_step(self, step: int, params_fn: Callable[[], Any]) -> None:
        self.mixture.after_step(step, lambda: self.full_params(params_fn()))


def _finish(tc: Any, plan: FinetunePlan, params: Any, meta: dict, base: BaseModel, export: bool,
            started: float) -> RunResult:
    """Exports the result when asked, marks the run finished, and returns it with its parameters."""
    if export:
        driver.export_model(plan.model_dir, base.config, params, base_config=base.hf_config,
                            tokenizer_dir=base.tokenizer_dir, dtype=tc.export_dtype or None)
    driver.finish_record(plan.run_dir, plan.fingerprint, plan.inputs, bool(tc.keep_checkpoints),
                         best_step=meta.get("best_step"), best_val_loss=meta.get("best_val_loss"),
                         steps=int(tc.steps))
    return RunResult(plan.task, plan.run_dir, plan.model_dir if export else None, plan.fingerprint, False,
                     meta.get("best_step"), meta.get("best_val_loss"), int(tc.steps),
                     time.perf_counter() - started, params=params)


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
