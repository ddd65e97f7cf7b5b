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

import functools
import logging
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from forgetting_jax.models import attention
from forgetting_jax.train.batches import to_device
from forgetting_jax.train.driver import empty_rows
from forgetting_jax.train.mesh import AXES, BATCH_AXES, device_array, mesh_devices, mesh_shape
from forgetting_jax.train.partitioning import activation_rules
from forgetting_jax.train.state import TrainState
from forgetting_jax.train.step import (BATCH_FIELDS, CompiledSteps, StepSettings, accumulate_gradients, apply_update,
                                       compile_key, eval_step, micro_loss, step_key)

log = logging.getLogger("forgetting_jax.train")

TASK_AXIS = "task"


def make_task_mesh(spec: Any, task_groups: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (task, data, fsdp, tensor) mesh: `task_groups` sub-meshes, each shaped by `spec` (the
    config's mesh section; -1 fills the devices of one sub-mesh)."""
    spec = {"data": -1} if spec is None else spec
    devices = mesh_devices(spec, devices)
    if task_groups < 1 or len(devices) % task_groups:
        raise ValueError(f"{len(devices)} devices do not split into {task_groups} task sub-meshes")
    shape = (task_groups,) + mesh_shape(spec, len(devices) // task_groups)
    return Mesh(device_array(devices, shape), (TASK_AXIS,) + AXES)


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
        evaluate = jax.vmap(functools.partial(eval_step, config, settings), in_axes=(0, None, 0),
                            spmd_axis_name=TASK_AXIS)

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

    def _train_step(self, states: TrainState, frozen: Any, batch: dict):
        """The one-task step of train/step.py for P tasks: its micro-batch loss, its update and its
        keys vmapped over the task axis. The scan over micro-batches is shared (one
        `accumulate_gradients`), and a micro-batch is skipped when it holds no trained token in any
        task (vmapping the whole one-task step would turn its skip into a select that computes
        every micro-batch)."""
        single, settings = self.single, self.settings
        vmap = functools.partial(jax.vmap, spmd_axis_name=TASK_AXIS)
        loss = functools.partial(micro_loss, single.config, settings.lora)
        grad_fn = vmap(jax.value_and_grad(loss, has_aux=True), in_axes=(0, None, 0, 0))
        micro_first = {k: jnp.swapaxes(v, 0, 1) for k, v in batch.items()}  # [A, P, R, L]
        keys = vmap(functools.partial(step_key, settings.seed))(states.step)
        grads, nll, count = accumulate_gradients(grad_fn, states.params, frozen, micro_first, keys,
                                                 self.trainable_shardings)
        return vmap(functools.partial(apply_update, single.optimizer, single.schedule))(states, grads, nll, count)

    def init_state(self, trainable) -> TrainState:
        with activation_rules(self.mesh):
            return self._init(trainable)

    def stack(self, states: Sequence[TrainState]) -> TrainState:
        with activation_rules(self.mesh):
            return self._stack(list(states))

    def take(self, states: TrainState, p: int) -> TrainState:
        with activation_rules(self.mesh):
            return self._take(states, jnp.int32(p))

    def train_step(self, states: TrainState, frozen: Any, batch: dict, active: np.ndarray):
        """One step of every task; tasks where `active` is False keep their state (a second program,
        compiled only when a group has inactive slots)."""
        active = np.asarray(active, bool)
        with activation_rules(self.mesh):
            if active.all():
                return self._train_all(states, frozen, batch)
            active = jax.make_array_from_callback(active.shape, self._per_task, lambda index: active[index])
            return self._train(states, frozen, batch, active)

    def eval_step(self, params, frozen: Any, batch: dict):
        with activation_rules(self.mesh):
            return self._eval(params, frozen, batch)


_CACHE: dict[tuple, MultiTaskSteps] = {}


def multitask_steps(config, settings: StepSettings, mesh: Mesh, num_tasks: int) -> MultiTaskSteps:
    """Cached MultiTaskSteps (the key of `step.compiled_steps`, plus P)."""
    key = compile_key(config, settings, mesh, num_tasks)
    if key not in _CACHE:
        _CACHE[key] = MultiTaskSteps(key[0], settings, mesh, num_tasks)
    return _CACHE[key]


class MultiTaskProgram:
    """P runs in one compiled step (train/driver.py's Program): batches [P, A, R, L]; idle or
    waiting slots step on empty rows and keep their state."""

    def __init__(self, steps: MultiTaskSteps, max_segments: int):
        self.steps = steps
        self.num_slots = steps.num_tasks
        self.abstract_state = steps.single.abstract_state
        settings = steps.settings
        self._empty_train = empty_rows(settings.micro_batches * settings.micro_rows, settings.row_length,
                                       max_segments)
        self._empty_eval = empty_rows(settings.eval_rows, settings.row_length, max_segments)

    def init(self, states, fresh):
        if all(state is None for state in states):
            return self.steps.init_state(fresh())
        single = self.steps.single
        return self.steps.stack([single.init_state(fresh()) if state is None else state for state in states])

    def device_batch(self, rows):
        rows = [self._empty_train if r is None else r for r in rows]
        return to_device(rows, self.steps.batch_sharding, self.steps.settings.micro_batches)

    def step(self, states, frozen, batch, active):
        return self.steps.train_step(states, frozen, batch, active)

    def evaluate(self, states, frozen, eval_rows):
        sums, counts = np.zeros(self.num_slots), np.zeros(self.num_slots)
        for b in range(max(len(rows) for rows in eval_rows)):
            batch = [rows[b] if b < len(rows) else self._empty_eval for rows in eval_rows]
            device_batch = to_device(batch, self.steps.eval_batch_sharding)
            nll, count = self.steps.eval_step(states.params, frozen, device_batch)
            sums += np.asarray(nll, np.float64)
            counts += np.asarray(count, np.float64)
        return sums, counts

    def take(self, states, slot):
        return self.steps.take(states, slot)


def describe_task_mesh(mesh: Mesh) -> str:
    inner = " x ".join(f"{axis} {mesh.shape[axis]}" for axis in AXES)
    per = math.prod(mesh.shape[a] for a in AXES)
    return f"{mesh.shape[TASK_AXIS]} task sub-mesh(es) of {inner} ({per} devices each)"
