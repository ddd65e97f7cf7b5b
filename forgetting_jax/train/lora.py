"""LoRA on the attention and MLP projections, without touching the model code.

A LoRA run trains, for each target projection y = x W (W a Dense kernel), two factors
A [in..., r] and B [r, out...] and computes y = x W + (alpha / r) * dropout(x) A B, as PEFT does.
The factors live beside the kernel in the parameter tree ({"kernel", "lora_a", "lora_b",
"lora_seed"}); a flax method interceptor adds the low-rank branch to every Dense that has them,
so the stacked-layer scan slices them per layer like any parameter. `lora_seed` (one int per
layer and projection, never trained) makes the dropout masks differ between layers.
A finished run is merged into plain kernels (`merge`), so scoring and export see an ordinary model.
"""

import contextlib
import dataclasses
import functools
from typing import Any, Iterator, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from forgetting_jax.experiment.choices import LORA_TARGETS as TARGETS
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import logical_axes, param_shapes
from forgetting_jax.models.layers import Dense

_GROUP = {"q": "attn", "k": "attn", "v": "attn", "o": "attn", "gate": "mlp", "up": "mlp", "down": "mlp"}


class LoraFrozen(NamedTuple):
    """What LoRA training holds fixed beside the trained adapters (a pytree of two subtrees)."""

    base: Any  # the base model's parameters
    seeds: Any  # the adapters' dropout seeds


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    rank: int = 64
    alpha: float = 16.0
    dropout: float = 0.1
    targets: tuple[str, ...] = TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _in_ndim(name: str) -> int:
    return 2 if name == "o" else 1  # o maps [heads, head_dim] -> embed; the others one input axis


def target_paths(config: ModelConfig, settings: LoraSettings) -> list[tuple[str, str]]:
    """(group, projection) pairs present in this model among the settings' targets."""
    layers = param_shapes(config)["layers"]
    return [(_GROUP[t], t) for t in settings.targets if t in layers.get(_GROUP[t], {})]


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_lora(config: ModelConfig, settings: LoraSettings, rng: jax.Array) -> tuple[dict, dict]:
    """(factors, seeds): {"layers": {group: {proj: {"lora_a", "lora_b"}}}} in param_dtype, and
    {"layers": {group: {proj: {"lora_seed": [layers] uint32}}}}.

    A is uniform in +-1/sqrt(fan_in) (PEFT's kaiming_uniform(a=sqrt(5))); B is zero, so an
    untrained adapter leaves the model unchanged.
    """
    shapes = param_shapes(config)["layers"]
    dtype = jnp.dtype(config.param_dtype)
    factors: dict = {"layers": {}}
    seeds: dict = {"layers": {}}
    for k, (group, name) in enumerate(target_paths(config, settings)):
        shape = shapes[group][name]["kernel"].shape  # [L, in..., out...]
        n_in = _in_ndim(name)
        in_dims, out_dims = shape[1:1 + n_in], shape[1 + n_in:]
        fan_in = 1
        for d in in_dims:
            fan_in *= d
        key_a, key_seed = jax.random.split(jax.random.fold_in(rng, k))
        bound = fan_in ** -0.5
        a = jax.random.uniform(key_a, (shape[0], *in_dims, settings.rank), dtype, -bound, bound)
        b = jnp.zeros((shape[0], settings.rank, *out_dims), dtype)
        factors["layers"].setdefault(group, {})[name] = {"lora_a": a, "lora_b": b}
        seed = jax.random.randint(key_seed, (shape[0],), 0, 2 ** 31 - 1).astype(jnp.uint32)
        seeds["layers"].setdefault(group, {})[name] = {"lora_seed": seed}
    return factors, seeds


def logical_specs(config: ModelConfig, settings: LoraSettings) -> tuple[dict, dict]:
    """Logical PartitionSpecs of (factors, seeds), derived from each kernel's own axis names."""
    kernels = logical_axes(config)["layers"]
    factors: dict = {"layers": {}}
    seeds: dict = {"layers": {}}
    for group, name in target_paths(config, settings):
        spec = tuple(kernels[group][name]["kernel"])  # ("layers", in..., out...)
        n_in = _in_ndim(name)
        in_axes, out_axes = spec[1:1 + n_in], spec[1 + n_in:]
        factors["layers"].setdefault(group, {})[name] = {
            "lora_a": P("layers", *in_axes, "lora_rank"), "lora_b": P("layers", "lora_rank", *out_axes)}
        seeds["layers"].setdefault(group, {})[name] = {"lora_seed": P("layers")}
    return factors, seeds


def attach(params: dict, *trees: dict) -> dict:
    """`params` with the leaves of `trees` added beside the kernels (a new tree; arrays shared)."""
    def merge(a, b):
        if not isinstance(b, dict):
            return b
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(a.get(key, {}), value) if isinstance(value, dict) else value
        return out

    out = params
    for tree in trees:
        out = merge(out, tree)
    return out


def _low_rank(x: jax.Array, a: jax.Array, b: jax.Array, n_in: int) -> jax.Array:
    dtype = x.dtype
    contract_x = tuple(range(x.ndim - n_in, x.ndim))
    xa = jax.lax.dot_general(x, a.astype(dtype), ((contract_x, tuple(range(n_in))), ((), ())))
    return jax.lax.dot_general(xa, b.astype(dtype), (((xa.ndim - 1,), (0,)), ((), ())))


@contextlib.contextmanager
def lora_branches(settings: LoraSettings, dropout_key: jax.Array | None = None) -> Iterator[None]:
    """While active, every Dense whose parameters include lora_a/lora_b adds its low-rank branch.

    dropout_key: None disables dropout (evaluation); else inputs of the branch are dropped with
    probability settings.dropout, masks drawn from (dropout_key, the projection's lora_seed).
    """
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name != "__call__" or not isinstance(module, Dense)
                or not module.has_variable("params", "lora_a")):
            return next_fun(*args, **kwargs)
        y = next_fun(*args, **kwargs)
        x = args[0].astype(y.dtype)
        a = module.get_variable("params", "lora_a")
        b = module.get_variable("params", "lora_b")
        if dropout_key is not None and settings.dropout > 0:
            seed = module.get_variable("params", "lora_seed")
            keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, seed), 1.0 - settings.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - settings.dropout), jnp.zeros((), x.dtype))
        return y + (settings.scale * _low_rank(x, a, b, len(module.in_features))).astype(y.dtype)

    with nn.intercept_methods(interceptor):
        yield


@functools.partial(jax.jit, static_argnums=(2,))
def merge(params: dict, factors: dict, settings: LoraSettings) -> dict:
    """Plain parameters with W + (alpha / r) A B folded into every target kernel (fp32 math)."""
    out = jax.tree.map(lambda x: x, params)
    for group, projections in factors["layers"].items():
        for name, ab in projections.items():
            kernel = params["layers"][group][name]["kernel"]
            a = jnp.asarray(ab["lora_a"], jnp.float32)
            b = jnp.asarray(ab["lora_b"], jnp.float32)
            n_layers, rank = a.shape[0], a.shape[-1]
            delta = jnp.einsum("lir,lro->lio", a.reshape(n_layers, -1, rank), b.reshape(n_layers, rank, -1))
            merged = jnp.asarray(kernel, jnp.float32) + settings.scale * delta.reshape(kernel.shape)
            out["layers"][group][name] = dict(params["layers"][group][name], kernel=merged.astype(kernel.dtype))
    return out


def trainable_count(factors: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(factors))
