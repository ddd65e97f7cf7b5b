"""Two processes joined by jax.distributed (CPU collectives, 2 devices each) score and train
exactly as one process with 4 devices does, and save and restore an orbax checkpoint together."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from forgetting_jax.utils import runtime

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(tmp_path, name, num_processes, local_devices, port=0):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
               FJ_DISTRIBUTED="auto")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    out = str(tmp_path / f"{name}.npz")
    procs = [subprocess.Popen([sys.executable, WORKER, f"--out={out}", f"--checkpoint={tmp_path / name}_ckpt",
                               f"--num_processes={num_processes}", f"--process_id={i}", f"--port={port}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(num_processes)]
    return out, procs


def finish(procs, timeout=150):
    logs = []
    for p in procs:
        try:
            output, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a worker did not finish")
        logs.append(output)
        assert p.returncode == 0, output[-4000:]
    return logs


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one(tmp_path):
    two, two_procs = launch(tmp_path, "two", 2, 2, free_port())
    one, one_procs = launch(tmp_path, "one", 1, 4)
    finish(two_procs + one_procs)
    two, one = np.load(two), np.load(one)
    assert int(two["processes"]) == 2 and int(one["processes"]) == 1
    np.testing.assert_array_equal(two["count"], one["count"])
    np.testing.assert_allclose(two["nll"], one["nll"], rtol=1e-6, atol=1e-6)
    for key in ("mean", "last"):  # the representations too, each process feeding its own rows
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5, atol=1e-6)
    params = sorted(k for k in one.files if k.startswith("param_"))
    assert params and sorted(k for k in two.files if k.startswith("param_")) == params
    for key in params:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert bool(two["restored_equal"]) and bool(one["restored_equal"])


def test_plan_reads_config_then_environment():
    single = runtime.plan({"mode": "auto"}, {})
    assert not single.initialize
    explicit = runtime.plan({"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}, {})
    assert explicit.initialize and explicit.kwargs["coordinator_address"] == "10.0.0.1:1234"
    assert explicit.kwargs["num_processes"] == 4 and explicit.kwargs["process_id"] == 2
    from_env = runtime.plan(None, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": "1", "JAX_LOCAL_DEVICE_IDS": "0,1"})
    assert from_env.initialize and from_env.kwargs["process_id"] == 1 and from_env.kwargs["local_device_ids"] == [0, 1]
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "16", "SLURM_STEP_ID": "0"}
    assert runtime.plan({"mode": "auto"}, slurm).initialize
    assert not runtime.plan({"mode": "off"}, slurm).initialize
    assert not runtime.plan({"mode": "auto"}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}).initialize
    assert runtime.plan({"mode": "auto"}, {"OMPI_COMM_WORLD_SIZE": "8"}).initialize
    assert runtime.plan({"mode": "auto"}, {"TPU_WORKER_HOSTNAMES": "a,b,c,d"}).initialize
    assert runtime.plan({"mode": "auto"}, {"FJ_DISTRIBUTED": "on"}).initialize
    with pytest.raises(ValueError, match="mode"):
        runtime.plan({"mode": "sometimes"}, {})


def test_compilation_cache_goes_in_the_workspace(tmp_path):
    assert runtime.compilation_cache_dir({"compilation_cache": "on"}, str(tmp_path), {}) == \
        str(tmp_path / ".jax_cache")
    assert runtime.compilation_cache_dir({"compilation_cache": "auto"}, str(tmp_path), {}) is None  # CPU
    assert runtime.compilation_cache_dir({"compilation_cache": "off"}, str(tmp_path), {}) is None
    assert runtime.compilation_cache_dir({"compilation_cache": "auto"}, str(tmp_path),
                                             {"FJ_COMPILATION_CACHE": str(tmp_path / "c")}) == str(tmp_path / "c")
