"""AdamW with linear warm-up then linear decay to zero, and gradient clipping by global norm.

The schedule is transformers' `get_linear_schedule_with_warmup`: the learning rate of optimizer
step s (0-based) is lr * s / warmup during warm-up, then lr * (steps - s) / (steps - warmup).
Weight decay, when set, applies to matrices only (kernels, embeddings, LoRA factors), not to
norm scales or biases, as the transformers Trainer does.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

DECAYED_LEAVES = ("kernel", "embedding", "lm_head", "lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """Everything the update depends on (hashable: part of the compiled step's cache key)."""

    lr: float
    steps: int
    warmup_steps: int = 10
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 or less: no clipping


def learning_rate_schedule(settings: OptimizerSettings) -> optax.Schedule:
    """lr of optimizer step s (the update that step s applies)."""
    lr, warmup, total = settings.lr, settings.warmup_steps, settings.steps

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        up = step / max(warmup, 1)
        down = jnp.maximum(0.0, (total - step) / max(total - warmup, 1))
        return lr * jnp.where(step < warmup, up, down)

    return schedule


def _decay_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in DECAYED_LEAVES, params)


def make_optimizer(settings: OptimizerSettings) -> optax.GradientTransformation:
    """clip_by_global_norm, then AdamW on the schedule (moments in the parameters' dtype, fp32)."""
    adamw = optax.adamw(learning_rate_schedule(settings), b1=settings.b1, b2=settings.b2, eps=settings.eps,
                        weight_decay=settings.weight_decay, mask=_decay_mask)
    if settings.grad_clip and settings.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(settings.grad_clip), adamw)
    return adamw
