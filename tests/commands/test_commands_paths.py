"""A place a command cannot write is one line naming the flag, the path and the reason, before
any work starts (exit status 2): a directory where a file is wanted and the reverse, a parent
that is a file, a directory without write permission."""

import os

import pytest

from forgetting_jax.commands import common
from command_line import keep_pytest_stderr, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LM = os.path.join(ROOT, "tests", "fixtures", "data", "lm.jsonl")


def setup_module():
    keep_pytest_stderr()


@pytest.fixture
def places(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return tmp_path, str(a_file)


def _one_line(capsys, command):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"forgetting-jax {command}: error: --"), lines
    return lines[0]


def test_outputs_that_cannot_be_written(places, capsys):
    tmp, a_file = places
    matrix = str(tmp / "missing.npz")  # never read: the output is checked first
    cases = [
        (("predict", f"--matrix={matrix}", "--test_fraction=0.3", f"--output={tmp}"), "it is a directory; name a file"),
        (("analyze", f"--matrix={matrix}", f"--output={a_file}"), "it is a file, not a directory"),
        (("run", "--config=configs/demo.py", f"--workdir={a_file}"), "it is a file, not a directory"),
        (("replay", "--config=configs/demo.py", f"--workdir={a_file}/W"), f"{a_file} is a file, so"),
        (("score", f"--model={tmp}", f"--data={LM}", f"--output={a_file}/x.npz"), f"{a_file} is a file, so"),
        (("generate", f"--model={tmp}", f"--data={LM}", f"--output={a_file}/x.jsonl"), f"{a_file} is a file, so"),
    ]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for args, reason in cases:
            assert run_cli(*args) == 2, args
            line = _one_line(capsys, args[0])
            assert reason in line and ("--output=" in line or "--workdir=" in line), line
    finally:
        os.chdir(cwd)


def test_a_directory_without_write_permission(places, monkeypatch, capsys):
    tmp, _ = places
    locked = str(tmp / "locked")
    os.makedirs(locked)
    real_access = os.access
    monkeypatch.setattr(common.os, "access", lambda path, mode: False if path == locked else real_access(path, mode))
    expected = f"{locked} cannot be written (permission denied)"
    assert common.path_problem(os.path.join(locked, "out.json"), "file").startswith(expected)
    assert "permission denied), so" in common.path_problem(os.path.join(locked, "new", "W"), "directory")
    assert run_cli("predict", f"--matrix={tmp}/m.npz", "--test_fraction=0.3", f"--output={locked}/r.json") == 2
    assert "cannot be written (permission denied)" in _one_line(capsys, "predict")
    assert common.path_problem(str(tmp / "fine" / "W"), "directory") is None
