"""One command at a time per workspace: W/.lock names the holder (host, pid, start time, command).

    with workspace_lock(workdir, "run"):
        ...

The lock is an advisory `flock` on W/.lock (released by the kernel when the holder dies) plus
the holder's description inside the file (for the message, and for file systems where flock does
not reach other hosts). A second command on the same workspace stops at once with
`WorkspaceLocked`, naming the holder. A lock left behind is taken over, with a warning, when it
names this host and a process that no longer runs (or is empty); a lock of another host is
never taken over: the message says how to remove it. The lock is released (the file deleted)
when the block ends, also on exceptions and KeyboardInterrupt. On multi-process runs only
process 0 takes it (`workspace_lock(..., main=is_main())`).
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Iterator
from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.workspace")

LOCK_FILE = ".lock"


class WorkspaceLocked(RuntimeError):
    """The workspace is in use by another command."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _describe(holder: dict) -> str:
    return (f"`forgetting-jax {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {holder.get('started', '?')})")


def _read_holder(fd: int) -> tuple[dict | None, str]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    try:
        holder = json.loads(text)
        return (holder if isinstance(holder, dict) else None), text
    except ValueError:
        return None, text


def acquire(workdir: str, command: str) -> int:
    """Takes W/.lock for `command`; returns the open descriptor that holds it (see `release`)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    host, pid = socket.gethostname(), os.getpid()
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            holder, _ = _read_holder(fd)
            os.close(fd)
            who = _describe(holder) if holder else "another process (its details are not written yet)"
            raise WorkspaceLocked(f"the workspace {workdir} is in use by {who}; wait for it to finish "
                                  f"(lock file {path})") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder deleted the file between our open and flock: retry
            os.close(fd)
            continue
        holder, text = _read_holder(fd)
        if holder is not None and holder.get("pid") is not None:
            their_host, their_pid = holder.get("host"), int(holder.get("pid", 0))
            if their_host != host:
                os.close(fd)
                raise WorkspaceLocked(
                    f"the workspace {workdir} is locked by {_describe(holder)}; this host ({host}) cannot "
                    f"check whether that run is still going. If you are sure that no run on {their_host} "
                    f"uses this workspace, delete {path} and start again")
            if their_pid != pid and _pid_alive(their_pid):
                os.close(fd)
                raise WorkspaceLocked(f"the workspace {workdir} is in use by {_describe(holder)}; wait for it "
                                      f"to finish (lock file {path}; if that process is not a forgetting-jax "
                                      f"command, delete the file)")
            log.warning("taking over the stale lock %s of %s: that process no longer runs", path, _describe(holder))
        elif text.strip():
            log.warning("taking over the unreadable lock %s (%r)", path, text[:200])
        record = {"host": host, "pid": pid, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": command,
                  "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
        return fd
    raise WorkspaceLocked(f"the workspace {workdir}: cannot take the lock {path} (it keeps changing)")


def release(workdir: str, fd: int) -> None:
    """Deletes W/.lock (while still holding it) and closes `fd`."""
    path = os.path.join(workdir, LOCK_FILE)
    try:
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            os.remove(path)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def workspace_lock(workdir: str, command: str, main: bool | None = None) -> Iterator[None]:
    """Holds W/.lock for the block (see the module docstring). main: whether this process takes
    it (default: `is_main()`, process 0; other processes of a multi-process run do not)."""
    if main is None:
        main = is_main()
    if not main:
        yield
        return
    fd = acquire(workdir, command)
    try:
        yield
    finally:
        release(workdir, fd)
