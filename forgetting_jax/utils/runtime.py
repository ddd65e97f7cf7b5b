"""One process per host (TPU VMs) or per GPU (GPU clusters), joined into one JAX runtime.

Every experiment command calls `setup_process(config, workdir)` before it touches a device:
  1. runtime.xla_flags are appended to XLA_FLAGS (read when the backend starts);
  2. `maybe_initialize(config.distributed)` joins the processes with `jax.distributed.initialize`
     when the run is multi-process, and does nothing on a single process;
  3. the persistent compilation cache (runtime.compilation_cache) is pointed at W/.jax_cache, so
     a rerun, a resumed run or the next task's process skips XLA compilation.

The fields: experiment.DistributedSettings (config.distributed; environment variables fill what the
config leaves unset) and experiment.RuntimeSettings (config.runtime).

Once joined, `jax.devices()` lists every device of every process, meshes span hosts, each
process feeds the rows its own devices hold (`score.scorer`, `train.batches`), orbax writes
checkpoints collectively, and only process 0 writes the workspace's other files.
"""

import dataclasses
import glob
import importlib.util
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np

log = logging.getLogger("forgetting_jax.runtime")

MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Whether and how to call jax.distributed.initialize, and why."""

    initialize: bool
    kwargs: dict
    reason: str


def _get(spec: Any, name: str, default: Any) -> Any:
    if spec is None:
        return default
    value = spec.get(name, default) if hasattr(spec, "get") else getattr(spec, name, default)
    return default if value is None else value


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def detect_cluster(environ: Mapping[str, str]) -> str | None:
    """The multi-process environment this process runs in, if any: tpu | slurm | openmpi."""
    if environ.get("MEGASCALE_COORDINATOR_ADDRESS") or "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    if _int(environ.get("SLURM_STEP_NUM_TASKS", environ.get("SLURM_NTASKS")), 1) > 1 and "SLURM_STEP_ID" in environ:
        return "slurm"
    if _int(environ.get("OMPI_COMM_WORLD_SIZE"), 1) > 1:
        return "openmpi"
    if _on_tpu_vm(environ):
        return "tpu"
    return None


def _on_tpu_vm(environ: Mapping[str, str]) -> bool:
    if environ.get("JAX_PLATFORMS", "").strip() == "cpu":
        return False
    accelerators = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    return bool(accelerators) and importlib.util.find_spec("libtpu") is not None


def plan(spec: Any = None, environ: Mapping[str, str] | None = None) -> Plan:
    """What `maybe_initialize` would do for config.distributed `spec` (None: the environment only)."""
    environ = os.environ if environ is None else environ
    mode = str(environ.get("FJ_DISTRIBUTED") or _get(spec, "mode", "auto"))
    if mode not in MODES:
        raise ValueError(f"distributed.mode {mode!r} is not one of {MODES}")
    coordinator = _get(spec, "coordinator_address", "") or environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = _int(_get(spec, "num_processes", 0), 0) or _int(environ.get("JAX_NUM_PROCESSES"), 0)
    process_id = _int(_get(spec, "process_id", -1), -1)
    if process_id < 0:
        process_id = _int(environ.get("JAX_PROCESS_ID"), -1)
    devices = str(_get(spec, "local_device_ids", "") or environ.get("JAX_LOCAL_DEVICE_IDS", ""))
    kwargs: dict = {"initialization_timeout": _int(_get(spec, "initialization_timeout", 300), 300)}
    if coordinator:
        kwargs["coordinator_address"] = coordinator
    if num_processes > 0:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    if devices.strip():
        kwargs["local_device_ids"] = [int(d) for d in devices.split(",") if d.strip()]
    if mode == "off":
        return Plan(False, {}, "distributed.mode=off")
    if coordinator:
        if num_processes == 1:
            return Plan(False, {}, "a coordinator for a single process")
        return Plan(True, kwargs, f"coordinator {coordinator}")
    if mode == "on":
        return Plan(True, kwargs, "distributed.mode=on")
    cluster = detect_cluster(environ)
    if cluster is not None:
        return Plan(True, kwargs, f"{cluster} detected")
    return Plan(False, {}, "a single process")


def maybe_initialize(spec: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """Joins this process to the others (jax.distributed.initialize) when the run is multi-process;
    True when the runtime is distributed afterwards. Call it before anything uses a device."""
    if jax.distributed.is_initialized():
        return True
    decision = plan(spec, environ)
    if not decision.initialize:
        return False
    collectives = _get(spec, "cpu_collectives", "gloo")
    if collectives:
        jax.config.update("jax_cpu_collectives_implementation", collectives)
    log.info("joining the distributed runtime (%s)", decision.reason)
    try:
        jax.distributed.initialize(**decision.kwargs)
    except RuntimeError as err:
        if "before" in str(err).lower():
            raise RuntimeError(f"jax.distributed.initialize must run before any device is used: {err}") from None
        raise
    log.info("process %d of %d; %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


def add_xla_flags(flags: str) -> None:
    """Appends `flags` to XLA_FLAGS (they take effect when the backend starts: call early)."""
    flags = " ".join(str(flags or "").split())
    if not flags:
        return
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in flags.split() if f not in current.split()]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current] + missing).strip()


def compilation_cache_dir(spec: Any, workdir: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The persistent compilation cache directory runtime.compilation_cache asks for (None: off)."""
    environ = os.environ if environ is None else environ
    setting = str(environ.get("FJ_COMPILATION_CACHE") or _get(spec, "compilation_cache", "auto"))
    if setting == "off":
        return None
    if setting in ("auto", "on"):
        if not workdir or (setting == "auto" and jax.default_backend() == "cpu"):
            return None
        return os.path.join(os.path.abspath(workdir), ".jax_cache")
    return os.path.abspath(setting)


def enable_compilation_cache(directory: str | None, min_compile_seconds: float = 1.0) -> None:
    if directory is None:
        return
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def setup_process(config: Any = None, workdir: str | None = None) -> bool:
    """XLA flags, the distributed runtime and the compilation cache of an experiment command
    (config: an experiment config or None). True when the run is multi-process."""
    runtime = _get(config, "runtime", None)
    add_xla_flags(_get(runtime, "xla_flags", ""))
    distributed = maybe_initialize(_get(config, "distributed", None))
    enable_compilation_cache(compilation_cache_dir(runtime, workdir),
                             float(_get(runtime, "cache_min_compile_seconds", 1.0)))
    return distributed and jax.process_count() > 1


def is_main() -> bool:
    """True on the process that writes shared files (process 0)."""
    return jax.process_index() == 0


def host_tree(tree: Any) -> Any:
    """A (possibly sharded, possibly multi-host) tree as numpy arrays on every process (a
    collective on several processes: every process must call it)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def barrier(name: str) -> None:
    """Waits until every process gets here (no-op on one process): after process 0 writes files
    that the others read next (an exported model, a matrix row)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
