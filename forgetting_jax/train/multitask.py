"""Several tasks fine-tuned at once: one compiled step over a stacked axis of P train states.

A forgetting matrix fine-tunes the same base on M tasks with the same shapes, so P of them can
share one program: the train step of `train.step` (its loss, gradient accumulation over
micro-batches, optimizer and schedule) vmapped over a leading task axis of the states ([P, ...]
parameters and optimizer moments) and of the batches ([P, A, R, L], each task its own batch
stream). The mesh gains a `task` axis in front of (data, fsdp, tensor):

  task = 1   every task on every device (the P steps fused into one program: small models on
             one device or one host, where a single task leaves the device idle)
  task = T   the devices split into T sub-meshes, P / T tasks on each (a pod: each task group
             trains on its own slice, sharded over data/fsdp/tensor inside it as usual)

Each task keeps everything a one-at-a-time run has: its own fingerprint and run directory,
metrics.jsonl, orbax checkpoints (latest and best by validation), resumption, and the exported
model of its best step, so the pipeline scores the P models exactly as it scores one, and a
finished run is reused by either path. The arithmetic is the one-task step's, so results agree
with one-at-a-time runs up to float reassociation of the batched matrix products.

The attention kernel of the fused step is XLA's: jax's batching rule of the cuDNN call does not
take the packed layout, so `model.attention_impl` applies to one-task steps only.

A group shorter than P is padded with inactive slots (their updates are masked), so the step
compiles once for the whole matrix. Tasks resuming from different steps wait, inactive, until
the group reaches their step.
"""

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from forgetting_jax.data.packing import PackedRows, materialize_rows
from forgetting_jax.data.pipeline import PackedBatches, PipelineConfig, Prefetcher
from forgetting_jax.models import attention
from forgetting_jax.models.hf_checkpoint import export_hf_model
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train import lora as lora_lib
from forgetting_jax.train import loop
from forgetting_jax.train.batches import make_batches, stats_of
from forgetting_jax.train.mesh import AXES, BATCH_AXES, mesh_shape
from forgetting_jax.train.metrics import MetricsLog
from forgetting_jax.train.partitioning import activation_rules
from forgetting_jax.train.state import TrainState
from forgetting_jax.train import step as step_lib
from forgetting_jax.train.step import BATCH_FIELDS, CompiledSteps, StepSettings, flops_per_token

log = logging.getLogger("forgetting_jax.train")

TASK_AXIS = "task"


def make_task_mesh(spec: Any, task_groups: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (task, data, fsdp, tensor) mesh: `task_groups` sub-meshes, each shaped by `spec` (the
    config's mesh section; -1 fills the devices of one sub-mesh)."""
    if devices is None:
        devices = jax.devices()
        wanted = int(spec.get("num_devices", -1) or -1) if spec is not None else -1
        if wanted != -1:
            devices = devices[:wanted]
    devices = list(devices)
    if task_groups < 1 or len(devices) % task_groups:
        raise ValueError(f"{len(devices)} devices do not split into {task_groups} task sub-meshes")
    sizes = mesh_shape(spec if spec is not None else {"data": -1}, len(devices) // task_groups)
    shape = (task_groups,) + tuple(sizes)
    if len(devices) == len(jax.devices()) and len(devices) > 1:
        from jax.experimental import mesh_utils

        array = mesh_utils.create_device_mesh(shape, devices=devices)
    else:
        array = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(array, (TASK_AXIS,) + AXES)


def _stacked(mesh: Mesh, tree: Any) -> Any:
    """The shardings of `tree` (per-task NamedShardings) with the task axis in front."""
    return jax.tree.map(lambda s: NamedSharding(mesh, P(TASK_AXIS, *s.spec)), tree)


class MultiTaskSteps:
    """The compiled functions of P tasks of one (model, step settings) on a task mesh.

    init_state(trainable) -> stacked TrainState   (every task starts from `trainable`)
    stack(states) -> stacked TrainState            (from P single-task states)
    take(states, p) -> TrainState of task p
    train_step(states, frozen, batch [P, A, R, L], active [P]) -> (states, metrics [P])
    eval_step(params, frozen, batch [P, R, L]) -> (nll_sum [P], count [P])
    """

    def __init__(self, config, settings: StepSettings, mesh: Mesh, num_tasks: int):
        if num_tasks % mesh.shape[TASK_AXIS]:
            raise ValueError(f"{num_tasks} tasks do not split over a task axis of {mesh.shape[TASK_AXIS]}")
        if attention.resolve(config) == "cudnn":
            # jax's batching rule of the cuDNN call does not take the packed layout: XLA attention.
            log.info("tasks fine-tuned at once use XLA attention (cuDNN's packed layout does not vmap)")
            config = config.replace(attention_impl="xla")
        self.single = single = CompiledSteps(config, settings, mesh)
        self.mesh, self.num_tasks, self.settings = mesh, num_tasks, settings
        self.state_shardings = _stacked(mesh, single.state_shardings)
        self.batch_sharding = NamedSharding(mesh, P(TASK_AXIS, None, BATCH_AXES))
        self.eval_batch_sharding = NamedSharding(mesh, P(TASK_AXIS, BATCH_AXES))
        self._per_task = per_task = NamedSharding(mesh, P(TASK_AXIS))
        repl = NamedSharding(mesh, P())
        batch_sh = {k: self.batch_sharding for k in BATCH_FIELDS}
        eval_sh = {k: self.eval_batch_sharding for k in BATCH_FIELDS}
        self.trainable_shardings = _stacked(mesh, single.trainable_shardings)
        evaluate = jax.vmap(single._eval_step, in_axes=(0, None, 0), spmd_axis_name=TASK_AXIS)

        def train_step(states, frozen, batch, active_P):
            updated, metrics = self._train_step(states, frozen, batch)

            def keep(new, old):
                return jnp.where(active_P.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

            return jax.tree.map(keep, updated, states), metrics

        def init(trainable):
            stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks,) + x.shape), trainable)
            return jax.vmap(lambda p: TrainState.create(p, single.optimizer))(stacked)

        self._train = jax.jit(train_step, in_shardings=(self.state_shardings, single.frozen_shardings, batch_sh,
                                                        per_task),
                              out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
        self._train_all = jax.jit(self._train_step, in_shardings=(self.state_shardings, single.frozen_shardings,
                                                                  batch_sh),
                                  out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
        self._eval = jax.jit(evaluate, in_shardings=(self.state_shardings.params, single.frozen_shardings, eval_sh),
                             out_shardings=(repl, repl))
        self._init = jax.jit(init, in_shardings=(single.trainable_shardings,), out_shardings=self.state_shardings)
        self._stack = jax.jit(lambda states: jax.tree.map(lambda *x: jnp.stack(x), *states),
                              out_shardings=self.state_shardings)
        self._take = jax.jit(lambda states, p: jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, p, 0, False),
                                                            states),
                             out_shardings=single.state_shardings)

    def _train_step(self, states: TrainState, frozen: dict, batch: dict):
        """`CompiledSteps._train_step` for P tasks: the per-task loss, gradients and update are
        vmapped; the scan over micro-batches is shared, and a micro-batch is skipped when it holds
        no trained token in any task (vmapping the one-task step would turn its skip into a
        select that computes every micro-batch)."""
        single, settings = self.single, self.settings
        lora = settings.lora
        vmap = functools.partial(jax.vmap, spmd_axis_name=TASK_AXIS)
        keys_P = vmap(lambda step: jax.random.fold_in(jax.random.key(settings.seed), step))(states.step)

        def loss_fn(trainable, micro, micro_key):
            params = step_lib._model_params(trainable, frozen, lora)
            if lora is None:
                return step_lib.loss_sums(single.config, params, micro)
            with lora_lib.lora_branches(lora, micro_key):
                return step_lib.loss_sums(single.config, params, micro)

        grad_fn = vmap(jax.value_and_grad(loss_fn, has_aux=True))
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), states.params)
        zeros = jax.lax.with_sharding_constraint(zeros, self.trainable_shardings)
        none_P = jnp.zeros((self.num_tasks,), jnp.float32)

        def micro_step(carry, xs):
            index, micro = xs

            def run(c):
                grads, nll, count = c
                micro_keys = vmap(lambda k: jax.random.fold_in(k, index))(keys_P)
                (micro_nll, micro_count), micro_grads = grad_fn(states.params, micro, micro_keys)
                grads = jax.tree.map(lambda g, m: g + m.astype(jnp.float32), grads, micro_grads)
                return grads, nll + micro_nll, count + micro_count

            return jax.lax.cond(jnp.any(micro["loss_mask"]), run, lambda c: c, carry), None

        micro_first = {k: jnp.swapaxes(v, 0, 1) for k, v in batch.items()}  # [A, P, R, L]
        (grads, nll, count), _ = jax.lax.scan(micro_step, (zeros, none_P, none_P),
                                              (jnp.arange(settings.micro_batches), micro_first))
        denom_P = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom_P.reshape((-1,) + (1,) * (g.ndim - 1)), grads)

        def update(grads, opt_state, params, step):
            updates, opt_state = single.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads), single.schedule(step)

        params, opt_state, grad_norm, lr = vmap(update)(grads, states.opt_state, states.params, states.step)
        metrics = {"loss": nll / denom_P, "grad_norm": grad_norm, "lr": lr, "loss_tokens": count}
        return TrainState(step=states.step + 1, params=params, opt_state=opt_state), metrics

    def init_state(self, trainable) -> TrainState:
        with activation_rules(self.mesh):
            return self._init(trainable)

    def stack(self, states: Sequence[TrainState]) -> TrainState:
        with activation_rules(self.mesh):
            return self._stack(list(states))

    def take(self, states: TrainState, p: int) -> TrainState:
        with activation_rules(self.mesh):
            return self._take(states, jnp.int32(p))

    def train_step(self, states: TrainState, frozen: dict, batch: dict, active: np.ndarray):
        """One step of every task; tasks where `active` is False keep their state (a second program,
        compiled only when a group has inactive slots)."""
        active = np.asarray(active, bool)
        with activation_rules(self.mesh):
            if active.all():
                return self._train_all(states, frozen, batch)
            active = jax.make_array_from_callback(active.shape, self._per_task, lambda index: active[index])
            return self._train(states, frozen, batch, active)

    def eval_step(self, params, frozen: dict, batch: dict):
        with activation_rules(self.mesh):
            return self._eval(params, frozen, batch)


_CACHE: dict[tuple, MultiTaskSteps] = {}


def multitask_steps(config, settings: StepSettings, mesh: Mesh, num_tasks: int) -> MultiTaskSteps:
    """Cached MultiTaskSteps (same key fields as `step.compiled_steps`, plus P)."""
    config = config.replace(bos_token_id=None, eos_token_id=None, pad_token_id=None, max_position_embeddings=0)
    key = (config, settings, mesh, num_tasks)
    if key not in _CACHE:
        _CACHE[key] = MultiTaskSteps(config, settings, mesh, num_tasks)
    return _CACHE[key]


def stack_rows(rows: Sequence[PackedRows], sharding: NamedSharding, leading: int | None) -> dict:
    """P tasks' host rows as one global batch [P, (A,) R, L] (every process holds all of them;
    each device receives only its own slice)."""
    out = {}
    for name in BATCH_FIELDS:
        array = np.stack([np.asarray(getattr(r, name)) for r in rows])
        if leading is not None:
            array = array.reshape(array.shape[0], leading, -1, array.shape[-1])
        out[name] = jax.make_array_from_callback(array.shape, sharding, lambda index, a=array: a[index])
    return out


def _empty_rows(num_rows: int, row_length: int, max_segments: int) -> PackedRows:
    return materialize_rows([], [], row_length, max_segments, num_rows=num_rows)


# The group run ---------------------------------------------------------------------------------

@dataclasses.dataclass
class _Slot:
    """One task of a group (None plan: an inactive padding slot)."""

    plan: loop.FinetunePlan | None
    start: int = 0
    checkpoints: ckpt_lib.RunCheckpoints | None = None
    metrics: MetricsLog | None = None
    batches: Any = None
    eval_rows: list | None = None
    meta: dict = dataclasses.field(default_factory=lambda: {"best_step": None, "best_val_loss": None})

    @property
    def evaluating(self) -> bool:
        return bool(self.eval_rows)


def finetune_group(config: Any, workdir: str, tasks: Sequence[str], base: loop.BaseModel, mesh: Mesh,
                   num_tasks: int | None = None) -> list[loop.RunResult]:
    """Fine-tunes `base` on every task of `tasks` at once (config.train, P = num_tasks slots, default
    len(tasks)); finished runs are reused. Returns one RunResult per task, in order."""
    started = time.perf_counter()
    tc = config.train
    num_tasks = num_tasks or len(tasks)
    if len(tasks) > num_tasks:
        raise ValueError(f"{len(tasks)} tasks do not fit a group of {num_tasks}")
    plans = [loop.plan_finetune(config, workdir, task, base) for task in tasks]
    results: dict[str, loop.RunResult] = {}
    todo = []
    for plan in plans:
        record = ckpt_lib.read_fingerprint(plan.run_dir)
        if record is not None and record.get("fingerprint") == plan.fingerprint:
            log.info("task %s: reusing the finished run %s", plan.task, plan.run_dir)
            results[plan.task] = loop.RunResult(plan.task, plan.run_dir, os.path.join(plan.run_dir, "model"),
                                                plan.fingerprint, True, record.get("best_step"),
                                                record.get("best_val_loss"), int(record.get("steps", tc.steps)),
                                                time.perf_counter() - started)
        else:
            todo.append(plan)
    if todo:
        for result in _train_group(config, todo, base, mesh, num_tasks, started):
            results[result.task] = result
    return [results[t] for t in tasks]


def _train_group(config: Any, plans: list, base: loop.BaseModel, mesh: Mesh, num_tasks: int,
                 started: float) -> list[loop.RunResult]:
    tc = config.train
    settings, batch_settings = loop.step_settings(tc, mesh)
    model_config = base.config
    steps = multitask_steps(model_config, settings, mesh, num_tasks)
    single = steps.single
    lora = settings.lora
    total = int(tc.steps)
    if lora is None:
        frozen: dict = {}
        trainable_fraction = 1.0

        def fresh_trainable():
            return loop.load_base_params(base, single.trainable_shardings)
    else:
        base_params = loop.load_base_params(base, single.frozen_shardings["base"])
        factors, seeds = lora_lib.init_lora(model_config, lora, jax.random.key(int(tc.seed)))
        frozen = {"base": base_params, "seeds": jax.device_put(seeds, single.frozen_shardings["seeds"])}
        trainable_fraction = lora_lib.trainable_count(factors) / model_config.num_params

        def fresh_trainable():
            return jax.device_put(factors, single.trainable_shardings)

    slots = [_Slot(plan) for plan in plans] + [_Slot(None) for _ in range(num_tasks - len(plans))]
    for slot in slots:
        if slot.plan is None:
            continue
        loop._run_record(slot.plan.run_dir, slot.plan.inputs)
        data = slot.plan.examples
        slot.batches = make_batches(data["train"], batch_settings)
        if tc.eval_every and data["validation"]:
            pipeline = PackedBatches(data["validation"], PipelineConfig(
                batch_rows=settings.eval_rows, row_length=settings.row_length, max_segments=int(tc.max_segments),
                seed=0, num_epochs=1))
            slot.eval_rows = [pipeline.batch(s) for s in range(pipeline.num_steps)]
        slot.checkpoints = ckpt_lib.RunCheckpoints(os.path.join(slot.plan.run_dir, "checkpoints"), slot.evaluating)
        slot.start = slot.checkpoints.latest_step() or 0

    if all(slot.start == 0 for slot in slots):
        states = steps.init_state(fresh_trainable())
    else:
        singles = []
        for slot in slots:
            if slot.start:
                state, slot.meta = slot.checkpoints.restore(slot.start, single.abstract_state)
                log.info("task %s: resuming from step %d of %d", slot.plan.task, slot.start, total)
            else:
                state = single.init_state(fresh_trainable())
            singles.append(state)
        states = steps.stack(singles)
    for slot in slots:
        if slot.plan is not None:
            slot.metrics = MetricsLog(os.path.join(slot.plan.run_dir, "metrics.jsonl"), slot.start)
    names = ", ".join(s.plan.task for s in slots if s.plan is not None)
    log.info("fine-tuning %d tasks at once (%s; %d slots): %s, %d steps on %s", len(plans), names, num_tasks,
             tc.method, total, describe_task_mesh(mesh))

    flops = flops_per_token(model_config, settings.row_length, trainable_fraction)
    peak = loop._peak(mesh, tc)
    empty_train = _empty_rows(settings.micro_batches * settings.micro_rows, settings.row_length,
                              int(tc.max_segments))
    empty_eval = _empty_rows(settings.eval_rows, settings.row_length, int(tc.max_segments))
    eval_count = max((len(s.eval_rows) for s in slots if s.eval_rows), default=0)

    def evaluate(params) -> list[float | None]:
        sums = np.zeros(num_tasks)
        counts = np.zeros(num_tasks)
        for b in range(eval_count):
            rows = [s.eval_rows[b] if s.eval_rows and b < len(s.eval_rows) else empty_eval for s in slots]
            nll, count = steps.eval_step(params, frozen, stack_rows(rows, steps.eval_batch_sharding, None))
            sums += np.asarray(nll, np.float64)
            counts += np.asarray(count, np.float64)
        return [float(n / max(c, 1.0)) if s.evaluating else None for n, c, s in zip(sums, counts, slots)]

    first = min(slot.start for slot in slots if slot.plan is not None)
    if first == 0 and eval_count:
        losses = evaluate(states.params)
        for slot, loss in zip(slots, losses):
            if slot.plan is not None and slot.start == 0 and loss is not None:
                slot.metrics.write({"step": 0, "val_loss": loss, "best": False})

    def active_at(step: int) -> np.ndarray:
        return np.array([s.plan is not None and s.start <= step for s in slots])

    def produce():
        for step in range(first, total):
            active = active_at(step)
            rows = [s.batches.batch(step) if on else empty_train for s, on in zip(slots, active)]
            yield stack_rows(rows, steps.batch_sharding, settings.micro_batches), [stats_of(r) for r in rows], active

    pending: list = []
    clock = [time.perf_counter()]

    def emit(item) -> None:
        done, device_metrics, stats, active = item
        values = {k: np.asarray(v, np.float64) for k, v in jax.device_get(device_metrics).items()}
        now = time.perf_counter()
        seconds = max(now - clock[0], 1e-9)
        clock[0] = now
        for p, slot in enumerate(slots):
            if not active[p]:
                continue
            rate = stats[p].real_tokens / seconds
            slot.metrics.write({"step": done, "loss": float(values["loss"][p]), "lr": float(values["lr"][p]),
                                "grad_norm": float(values["grad_norm"][p]),
                                "loss_tokens": int(values["loss_tokens"][p]), "real_tokens": stats[p].real_tokens,
                                "examples": stats[p].examples, "seconds": seconds, "tokens_per_second": rate,
                                "mfu": rate * flops / peak if peak else None})
        if done % int(tc.log_every) == 0 or done == total:
            tokens = sum(stats[p].real_tokens for p in range(num_tasks) if active[p])
            log.info("%d tasks: step %d/%d mean loss %.4f, %s tokens/s together", int(active.sum()), done, total,
                     float(np.mean(values["loss"][active])), f"{tokens / seconds:,.0f}")

    batches = Prefetcher(produce(), 2)
    try:
        for step in range(first, total):
            batch, stats, active = next(batches)
            states, step_metrics = steps.train_step(states, frozen, batch, active)
            if step == first:
                clock[0] = time.perf_counter()
            pending.append((step + 1, step_metrics, stats, active))
            while len(pending) > 1:
                emit(pending.pop(0))
            done = step + 1
            last = done == total
            evaluate_now = eval_count > 0 and (done % int(tc.eval_every) == 0 or last)
            save = last or (int(tc.save_every) > 0 and done % int(tc.save_every) == 0)
            if not (evaluate_now or save):
                continue
            while pending:
                emit(pending.pop(0))
            losses = evaluate(states.params) if evaluate_now else [None] * num_tasks
            for p, slot in enumerate(slots):
                if not active[p]:
                    continue
                loss = losses[p]
                best = loss is not None and (slot.meta["best_val_loss"] is None or loss < slot.meta["best_val_loss"])
                if loss is not None:
                    if best:
                        slot.meta = {"best_step": done, "best_val_loss": loss}
                    slot.metrics.write({"step": done, "val_loss": loss, "best": best})
                if save or best:
                    slot.checkpoints.save(done, steps.take(states, p), slot.meta,
                                          loss if slot.evaluating else None)
            clock[0] = time.perf_counter()
        while pending:
            emit(pending.pop(0))
        results = []
        for p, slot in enumerate(slots):
            if slot.plan is None:
                continue
            slot.checkpoints.wait()
            best_step = slot.meta.get("best_step")
            if slot.evaluating and best_step is not None and best_step != total:
                params = slot.checkpoints.restore(best_step, single.abstract_state)[0].params
            else:
                params = steps.take(states, p).params
                slot.meta = dict(slot.meta, best_step=slot.meta.get("best_step") or total)
            results.append(_export(config, slot, params, frozen, lora, model_config, base, started))
        return results
    finally:
        batches.close()
        for slot in slots:
            if slot.metrics is not None:
                slot.metrics.close()
            if slot.checkpoints is not None:
                slot.checkpoints.wait()
                slot.checkpoints.close()


def _export(config: Any, slot: _Slot, params: Any, frozen: dict, lora, model_config, base: loop.BaseModel,
            started: float) -> loop.RunResult:
    tc = config.train
    plan = slot.plan
    if lora is not None:
        params = lora_lib.merge(frozen["base"], params, lora)
    host_params = loop._host(params)  # a collective on several processes: every process takes part
    if loop._is_main():
        export_hf_model(os.path.join(plan.run_dir, "model"), model_config, host_params, base_config=base.hf_config,
                        tokenizer_dir=base.tokenizer_dir, dtype=tc.export_dtype or None)
    meta = slot.meta
    loop._finish(plan.run_dir, plan.fingerprint, plan.inputs, bool(tc.keep_checkpoints),
                 best_step=meta.get("best_step"), best_val_loss=meta.get("best_val_loss"), steps=int(tc.steps))
    return loop.RunResult(plan.task, plan.run_dir, os.path.join(plan.run_dir, "model"), plan.fingerprint, False,
                          meta.get("best_step"), meta.get("best_val_loss"), int(tc.steps),
                          time.perf_counter() - started)


def describe_task_mesh(mesh: Mesh) -> str:
    inner = " x ".join(f"{axis} {mesh.shape[axis]}" for axis in AXES)
    per = math.prod(mesh.shape[a] for a in AXES)
    return f"{mesh.shape[TASK_AXIS]} task sub-mesh(es) of {inner} ({per} devices each)"
