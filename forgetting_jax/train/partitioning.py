"""The one table that maps logical axis names onto the mesh, and the shardings it implies.

Every parameter carries logical axis names (vocab, embed, heads, kv_heads, head_dim, mlp, norm,
layers; LoRA factors add lora_rank) and the model constrains its activations with activation_*
names. `LOGICAL_RULES` maps each name to mesh axes; changing the parallelism of a run is a
change of the mesh sizes, never of the model code. A mesh axis that does not divide a
parameter's dimension is dropped for that parameter (it is replicated along it instead).
"""

import contextlib
import logging
from typing import Any, Iterator

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from forgetting_jax.train.mesh import BATCH_AXES

log = logging.getLogger(__name__)

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("lora_rank", None),
)


@contextlib.contextmanager
def activation_rules(mesh: Mesh) -> Iterator[None]:
    """While tracing under this context, the model's activation constraints bind to `mesh`."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
        yield


def _axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    size = 1
    for name in names:
        size *= mesh.shape[name]
    return size


def mesh_spec(logical: P, shape: tuple[int, ...], mesh: Mesh, where: str = "") -> P:
    """The mesh PartitionSpec of one array from its logical names; axes that do not divide are dropped."""
    spec = nn.logical_to_mesh_axes(tuple(logical), LOGICAL_RULES)
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is not None and dim % _axis_size(mesh, axes):
            log.debug("%s: dimension %d is not divisible by mesh axes %s; replicated along it", where, dim, axes)
            axes = None
        out.append(axes)
    return P(*out)


def tree_shardings(logical_tree: Any, shapes_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of arrays (or ShapeDtypeStructs) from its tree of logical specs."""
    flat_logical, treedef = jax.tree.flatten(logical_tree, is_leaf=lambda x: isinstance(x, P))
    flat_shapes = treedef.flatten_up_to(shapes_tree)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        logical_tree, is_leaf=lambda x: isinstance(x, P))[0]]
    return treedef.unflatten([NamedSharding(mesh, mesh_spec(spec, tuple(s.shape), mesh, path))
                              for spec, s, path in zip(flat_logical, flat_shapes, paths)])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Rows split over (data, fsdp); `leading_axes` unsplit axes before the row axis (micro-batches)."""
    return NamedSharding(mesh, P(*([None] * leading_axes), BATCH_AXES))
