"""The compiled train and eval steps: loss on trained tokens only, accumulated over micro-batches.

A batch is five int/bool arrays [A, R, L] (A micro-batches of R packed rows of L tokens; the row
layout of `data.packing`). The loss of a step is the per-token mean NLL over every trained token
of all A micro-batches (sum of NLL / number of trained tokens), which is what transformers
computes for a batch, and with gradient accumulation (`num_items_in_batch`), for an accumulated
batch. Micro-batches without a trained token are skipped at run time (`lax.cond`), so a step
whose examples pack into fewer rows costs less. Parameters and optimizer state stay fp32 and are
donated; matrix products run in the model's compute dtype; NLL is fp32 (`lm_head.token_nll`).
The steps are compiled once per (model config, step settings, mesh) and cached in-process, so
fine-tuning many tasks of the same shape compiles once.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import Decoder, logical_axes, param_shapes, unembedding
from forgetting_jax.models.lm_head import token_nll
from forgetting_jax.train import lora as lora_lib
from forgetting_jax.train.optimizer import OptimizerSettings, learning_rate_schedule, make_optimizer
from forgetting_jax.train.partitioning import (LOGICAL_RULES, activation_rules, batch_sharding, replicated,
                                               tree_shardings)
from forgetting_jax.train.state import TrainState

BATCH_FIELDS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The static shape and math of a train step (hashable: the compiled-step cache key)."""

    micro_batches: int  # A
    micro_rows: int  # R, a multiple of the mesh's data x fsdp size
    row_length: int  # L
    optimizer: OptimizerSettings
    lora: lora_lib.LoraSettings | None = None
    seed: int = 0  # LoRA dropout masks are drawn from (seed, step, micro-batch)
    eval_rows: int = 8  # rows per eval batch


def loss_sums(config: ModelConfig, params: dict, batch: dict,
              num_chunks: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(sum of fp32 NLL over trained tokens, number of trained tokens) of one batch of rows [R, L]."""
    with nn.logical_axis_rules(LOGICAL_RULES):
        hidden_RxLxD = Decoder(config).apply({"params": params}, batch["tokens"], batch["positions"],
                                             batch["segment_ids"])
    nll_RxL = token_nll(hidden_RxLxD, unembedding(params, config), batch["targets"],
                        num_chunks or config.logits_chunks)
    mask_RxL = batch["loss_mask"]
    nll_sum = jnp.sum(jnp.where(mask_RxL, nll_RxL, 0.0))
    return nll_sum, jnp.sum(mask_RxL.astype(jnp.float32))


def _model_params(trainable: Any, frozen: Any, lora: lora_lib.LoraSettings | None) -> dict:
    if lora is None:
        return trainable
    return lora_lib.attach(frozen.base, trainable, frozen.seeds)


def step_key(seed: int, step: jax.Array) -> jax.Array:
    """The random key of optimizer step `step` (LoRA dropout): fold_in(key(seed), step)."""
    return jax.random.fold_in(jax.random.key(seed), step)


def micro_loss(config: ModelConfig, lora: lora_lib.LoraSettings | None, trainable: Any, frozen: Any, micro: dict,
               micro_key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(NLL sum, trained tokens) of one micro-batch [R, L] (micro_key None: LoRA dropout off)."""
    params = _model_params(trainable, frozen, lora)
    if lora is None:
        return loss_sums(config, params, micro)
    with lora_lib.lora_branches(lora, micro_key):
        return loss_sums(config, params, micro)


def apply_update(optimizer: optax.GradientTransformation, schedule: Any, state: TrainState, grads: Any,
                 nll: jax.Array, count: jax.Array) -> tuple[TrainState, dict]:
    """The optimizer step of one task from its summed fp32 gradients, NLL and token count."""
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": nll / denom, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
               "loss_tokens": count}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def train_step(config: ModelConfig, settings: StepSettings, optimizer: optax.GradientTransformation, schedule: Any,
               trainable_shardings: Any, state: TrainState, frozen: Any, batch: dict) -> tuple[TrainState, dict]:
    """One optimizer step of one task on a batch [A, R, L]: the gradients of its A micro-batches
    summed (`accumulate_gradients`), then the update. Pure: jit it with the first five arguments
    bound (CompiledSteps does)."""
    loss = functools.partial(micro_loss, config, settings.lora)
    grads, nll, count = accumulate_gradients(jax.value_and_grad(loss, has_aux=True), state.params, frozen, batch,
                                             step_key(settings.seed, state.step), trainable_shardings)
    return apply_update(optimizer, schedule, state, grads, nll, count)


def eval_step(config: ModelConfig, settings: StepSettings, trainable: Any, frozen: Any,
              batch: dict) -> tuple[jax.Array, jax.Array]:
    """(NLL sum, trained tokens) of one eval batch [R, L], dropout off. Pure, like `train_step`."""
    return micro_loss(config, settings.lora, trainable, frozen, batch, None)


def accumulate_gradients(grad_fn, trainable, frozen: Any, batch: dict, key: jax.Array, shardings):
    """Sums of fp32 gradients, NLL and trained tokens over the A micro-batches of `batch`.

    grad_fn(trainable, frozen, micro, micro_key) -> ((nll, count), grads): one task's
    `value_and_grad(micro_loss)`, or its vmap over a leading task axis (then every leaf of
    `trainable`, `micro` and `key` carries that axis, and nll / count are [P]). batch: fields
    [A, R, L] (or [A, P, R, L]); micro-batch a draws its key from fold_in(key, a). A micro-batch
    without a trained token (in any task) is skipped at run time (`lax.cond`).
    """
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if key.ndim else jax.random.fold_in
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
    zeros = jax.lax.with_sharding_constraint(zeros, shardings)
    none = jnp.zeros(key.shape, jnp.float32)
    num_micro = jax.tree.leaves(batch)[0].shape[0]

    def micro_step(carry, xs):
        index, micro = xs

        def run(c):
            grads, nll, count = c
            (micro_nll, micro_count), micro_grads = grad_fn(trainable, frozen, micro, fold(key, index))
            grads = jax.tree.map(lambda g, m: g + m.astype(jnp.float32), grads, micro_grads)
            return grads, nll + micro_nll, count + micro_count

        return jax.lax.cond(jnp.any(micro["loss_mask"]), run, lambda c: c, carry), None

    (grads, nll, count), _ = jax.lax.scan(micro_step, (zeros, none, none), (jnp.arange(num_micro), batch))
    return grads, nll, count


class CompiledSteps:
    """Shardings, optimizer and jit-compiled functions of one (model, settings, mesh).

    init_state(trainable) -> TrainState           (donates trainable)
    train_step(state, frozen, batch) -> (state, metrics)   the module's `train_step` (donates state)
    eval_step(state_params, frozen, batch) -> (nll_sum, count)   the module's `eval_step`
    frozen: {} for full fine-tuning; a train.lora.LoraFrozen (base params, dropout seeds) for LoRA.
    """

    def __init__(self, config: ModelConfig, settings: StepSettings, mesh: Mesh):
        self.config, self.settings, self.mesh = config, settings, mesh
        self.optimizer = make_optimizer(settings.optimizer)
        self.schedule = learning_rate_schedule(settings.optimizer)
        shapes = param_shapes(config)
        self.base_shardings = tree_shardings(logical_axes(config), shapes, mesh)
        if settings.lora is None:
            self.trainable_shardings = self.base_shardings
            self.frozen_shardings: Any = {}
            trainable_shapes = shapes
        else:
            factor_specs, seed_specs = lora_lib.logical_specs(config, settings.lora)
            factors, seeds = jax.eval_shape(
                lambda: lora_lib.init_lora(config, settings.lora, jax.random.key(0)))
            self.trainable_shardings = tree_shardings(factor_specs, factors, mesh)
            self.frozen_shardings = lora_lib.LoraFrozen(self.base_shardings, tree_shardings(seed_specs, seeds, mesh))
            trainable_shapes = factors
        repl = replicated(mesh)
        opt_shapes = jax.eval_shape(self.optimizer.init, trainable_shapes)
        opt_shardings = optax.tree_map_params(self.optimizer, lambda _, s: s, opt_shapes,
                                              self.trainable_shardings, transform_non_params=lambda _: repl)
        self.state_shardings = TrainState(step=repl, params=self.trainable_shardings, opt_state=opt_shardings)
        self.abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            jax.eval_shape(lambda p: TrainState.create(p, self.optimizer), trainable_shapes), self.state_shardings)
        self.batch_sharding = batch_sharding(mesh, leading_axes=1)
        self.eval_batch_sharding = batch_sharding(mesh)
        batch_sh = {k: self.batch_sharding for k in BATCH_FIELDS}
        eval_sh = {k: self.eval_batch_sharding for k in BATCH_FIELDS}
        self._init = jax.jit(lambda p: TrainState.create(p, self.optimizer), in_shardings=(self.trainable_shardings,),
                             out_shardings=self.state_shardings, donate_argnums=(0,))
        train = functools.partial(train_step, config, settings, self.optimizer, self.schedule,
                                  self.trainable_shardings)
        self._train = jax.jit(train, in_shardings=(self.state_shardings, self.frozen_shardings, batch_sh),
                              out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
        self._eval = jax.jit(functools.partial(eval_step, config, settings),
                             in_shardings=(self.trainable_shardings, self.frozen_shardings, eval_sh),
                             out_shardings=(repl, repl))

    # Calls (always under the mesh and the logical rules, so traces agree) ------------------------
    def init_state(self, trainable) -> TrainState:
        with activation_rules(self.mesh):
            return self._init(trainable)

    def train_step(self, state: TrainState, frozen: Any, batch: dict):
        """The module's `train_step`, compiled (donates state)."""
        with activation_rules(self.mesh):
            return self._train(state, frozen, batch)

    def eval_step(self, trainable, frozen: Any, batch: dict):
        """The module's `eval_step`, compiled."""
        with activation_rules(self.mesh):
            return self._eval(trainable, frozen, batch)


_CACHE: dict[tuple, CompiledSteps] = {}


def compiled_steps(config: ModelConfig, settings: StepSettings, mesh: Mesh) -> CompiledSteps:
    """The cached CompiledSteps of (config, settings, mesh): same shapes never compile twice.

    Fields that the computation never reads (special token ids, the position limit) are not
    part of the key, so models that differ only in them share one compilation.
    """
    key = compile_key(config, settings, mesh)
    if key not in _CACHE:
        _CACHE[key] = CompiledSteps(key[0], settings, mesh)
    return _CACHE[key]


def compile_key(config: ModelConfig, settings: StepSettings, mesh: Mesh, *more: Any) -> tuple:
    """(config without the fields the computation never reads, settings, mesh, *more): the key
    under which compiled steps are cached (train/multitask.py adds P)."""
    config = config.replace(bos_token_id=None, eos_token_id=None, pad_token_id=None, max_position_embeddings=0)
    return (config, settings, mesh) + more


def clear_cache() -> None:
    _CACHE.clear()


def flops_per_token(config: ModelConfig, row_length: int, trainable_fraction: float = 1.0) -> float:
    """Training FLOPs per token: 6 x parameters (2 forward, 4 backward; LoRA skips most weight
    gradients) plus attention scores and values (12 x layers x heads x head_dim x L, PaLM's count)."""
    matmul = (4 + 2 * trainable_fraction) * config.num_params
    attention = 12 * config.num_layers * config.num_heads * config.head_dim * row_length
    return float(matmul + attention)

