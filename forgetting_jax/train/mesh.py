"""The device mesh: three named axes built from a config, one of them sized to fill the rest.

  data    replicas of the whole model, each on its own rows of the batch
  fsdp    parameters, gradients and optimizer state split along their `embed` axis (ZeRO-3 style);
          rows of the batch are split over it too
  tensor  heads, MLP width and vocabulary split inside every layer (Megatron style)

A size of -1 takes whatever devices the other two leave (at most one axis may be -1).
"""

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the axes rows of a batch are split over


def mesh_shape(spec: Any, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes for `num_devices` devices; spec has fields data, fsdp, tensor."""
    sizes = [int(mesh_field(spec, axis, 1)) for axis in AXES]
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(AXES, sizes))}: sizes must be positive or -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(f"mesh {dict(zip(AXES, sizes))}: {num_devices} devices are not a multiple of {fixed}")
        sizes[fill[0]] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, {num_devices} are used")
    return tuple(sizes)


def mesh_field(spec: Any, name: str, default: Any) -> Any:
    """A field of a mesh spec: a dict, a ConfigDict or experiment.MeshSettings."""
    value = spec.get(name, default) if hasattr(spec, "get") else getattr(spec, name, default)
    return default if value is None else value


def mesh_devices(spec: Any, devices: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """`devices`, or the first spec.num_devices devices (-1 or absent: all)."""
    if devices is not None:
        return list(devices)
    devices = jax.devices()
    wanted = int(mesh_field(spec, "num_devices", -1) or -1)
    if wanted != -1:
        if wanted > len(devices):
            raise ValueError(f"mesh.num_devices={wanted}, but only {len(devices)} devices exist")
        devices = devices[:wanted]
    return list(devices)


def device_array(devices: Sequence[jax.Device], shape: Sequence[int]) -> np.ndarray:
    """`devices` arranged in `shape` (by the interconnect when they are all the devices)."""
    if len(devices) == len(jax.devices()) and len(devices) > 1:
        from jax.experimental import mesh_utils

        return mesh_utils.create_device_mesh(tuple(shape), devices=list(devices))
    return np.asarray(list(devices), dtype=object).reshape(tuple(shape))


def make_mesh(spec: Any = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh over `devices` (default: the first spec.num_devices devices, -1 or absent: all).

    spec: MeshSettings, a dict or ConfigDict with data, fsdp, tensor (and optionally num_devices);
    None: all data.
    """
    spec = {"data": -1} if spec is None else spec
    devices = mesh_devices(spec, devices)
    return Mesh(device_array(devices, mesh_shape(spec, len(devices))), AXES)


def batch_parallelism(mesh: Mesh) -> int:
    """How many ways the rows of a batch are split (data x fsdp)."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{axis} {mesh.shape[axis]}" for axis in AXES) + f" ({mesh.devices.size} devices)"
