"""The workspace lock (utils/lock.py): a second command on a workspace in use stops with a
message naming the holder (in-process and from the command line); a stale lock is taken over; a
lock of another host says how to remove it."""

import json
import os
import socket
import subprocess
import sys

import pytest

from forgetting_jax.utils.lock import WorkspaceLocked, workspace_lock


def _write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, ".lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "started": "2024-01-01 00:00:00", "command": "run", **holder}, f)


def test_lock_of_a_live_process_stops_a_second_command(tmp_path):
    workdir = str(tmp_path / "w")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(workdir, pid=sleeper.pid)
        with pytest.raises(WorkspaceLocked, match=f"in use by `forgetting-jax run` \\(pid {sleeper.pid} on host"):
            with workspace_lock(workdir, "replay", main=True):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.isfile(os.path.join(workdir, ".lock"))  # not ours to remove


def test_lock_held_by_another_process_stops_the_cli(tmp_path):
    workdir = str(tmp_path / "w")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from forgetting_jax.utils.lock import workspace_lock\n"
         "with workspace_lock(sys.argv[1], 'run', main=True):\n    print('held', flush=True); time.sleep(60)",
         workdir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceLocked, match=f"pid {holder.pid}"):
            with workspace_lock(workdir, "finetune", main=True):
                pass
        root = os.path.join(os.path.dirname(__file__), "..", "..")
        result = subprocess.run([sys.executable, "-m", "forgetting_jax", "run", "--config=configs/demo.py",
                                 f"--workdir={workdir}"], cwd=root, capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, JAX_PLATFORMS="cpu"))
        assert result.returncode == 1, result.stderr
        assert f"forgetting-jax run: error: the workspace {workdir} is in use by `forgetting-jax run` (pid " \
               f"{holder.pid}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over_and_released(tmp_path, warnings_of_package):
    workdir = str(tmp_path / "w")
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(workdir, pid=dead.pid)
    with workspace_lock(workdir, "run", main=True):
        with open(os.path.join(workdir, ".lock")) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert any("stale lock" in m and f"pid {dead.pid}" in m for m in warnings_of_package), warnings_of_package
    assert not os.path.exists(os.path.join(workdir, ".lock"))
    with pytest.raises(KeyboardInterrupt):
        with workspace_lock(workdir, "run", main=True):
            raise KeyboardInterrupt
    assert not os.path.exists(os.path.join(workdir, ".lock"))


def test_lock_of_another_host_says_how_to_remove_it(tmp_path):
    workdir = str(tmp_path / "w")
    _write_lock(workdir, pid=1, host="some-other-host")
    with pytest.raises(WorkspaceLocked, match="If you are sure that no run on some-other-host uses this workspace, "
                                              "delete .*\\.lock and start again"):
        with workspace_lock(workdir, "run", main=True):
            pass
