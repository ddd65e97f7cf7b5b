"""Commands stopped by the user or by bad overrides end with one line and the right exit status:
a mistyped section or field (2, with the suggestion), Ctrl-C (130) and SIGTERM (143) (saying what
was kept and how to go on), never a traceback."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from micro_demo import cli_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, FJ_PROGRESS="0", JAX_PLATFORMS="cpu")


def _command(*args):
    return [sys.executable, "-m", "forgetting_jax", *args]


@pytest.mark.parametrize("override, message", [
    ("--config.trian.lr=1", "--config.trian.lr: the config has no section 'trian'; did you mean 'train'?"),
    ("--config.train.stepz=3", "--config.train.stepz: config.train has no field 'stepz'; did you mean 'steps'?"),
    ("--config.train.lora.rnak=4", "config.train.lora has no field 'rnak'; did you mean 'rank'?"),
])
def test_a_mistyped_override_is_one_line_with_the_suggestion(tmp_path, override, message):
    result = subprocess.run(_command("run", "--config=configs/demo.py", f"--workdir={tmp_path}/W", override),
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("forgetting-jax run: error: ") and message in lines[0], lines
    assert not os.path.exists(tmp_path / "W" / "base")  # nothing started


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, how", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_stopped_run_says_what_it_kept(tmp_path, signum, code, how):
    workdir = str(tmp_path / "W")
    # SIGINT stays deliverable even when the test runs in the background (where it is ignored).
    process = subprocess.Popen(_command("run", "--config=configs/demo.py", f"--workdir={workdir}", "--noanalyze",
                                        *cli_overrides()),
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not glob.glob(os.path.join(workdir, "tasks", "*", "*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, process.stderr.read()[-3000:]  # still running: fine-tuning has started
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"forgetting-jax run: {how}; everything finished in {workdir} is kept") and \
        "rerun the same command" in last, last
    assert not os.path.exists(os.path.join(workdir, ".lock")) or _lock_free(os.path.join(workdir, ".lock"))


def _lock_free(path: str) -> bool:
    """True when nobody holds the workspace lock at `path` (a non-blocking flock succeeds)."""
    import fcntl

    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
    return True
