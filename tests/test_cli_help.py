"""`forgetting-jax <command> --help` lists the command's own flags, with help text and defaults."""

import os
import subprocess
import sys

import pytest

from forgetting_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A flag of each command (with a word of its help text) that its --help must list.
OWN_FLAGS = {
    "score": ("--max_length=N", "Tokens kept per example", "default: 1024"),
    "analyze": ("--max_rank=N", "truncated SVD", "default: 10"),
    "predict": ("--methods=A,B,...", "Methods:", "rep_dot", "--sampling=uniform|reference", "(default: auto)"),
    "pretrain": ("--config=FILE.py", "Experiment config", "required"),
    "finetune": ("--task=VALUE", "The task to fine-tune on", "required"),
    "run": ("--tasks=A,B,...", "Run only these tasks", "default: empty"),
    "replay": ("--strategies=A,B,...", "Strategies to run", "default: empty"),
    "inspect": ("--source=KIND", "source reader", "required"),
}
EXPERIMENT = {"pretrain", "finetune", "run", "replay"}


def help_text(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        cli.run(["forgetting-jax", *args])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_commands_are_listed(capsys):
    text = help_text(capsys, "--help")
    for name in OWN_FLAGS:
        assert f"  {name} " in text


@pytest.mark.parametrize("name", sorted(OWN_FLAGS))
def test_each_command_lists_its_flags(name, capsys):
    text = help_text(capsys, name, "--help")
    assert text.startswith(f"usage: forgetting-jax {name}")
    for piece in OWN_FLAGS[name]:
        assert piece in text, (name, piece)
    assert "example:\n  forgetting-jax " + name in text
    assert ("--config=FILE.py" in text and "--workdir=" in text and "--config.SECTION.FIELD=VALUE" in text) == (
        name in EXPERIMENT | {"predict"})  # predict: the workspace of a trainable rep_dot encoder
    assert "--helpfull" in text and "--logtostderr" not in text  # absl's own flags only with --helpfull


def test_help_forms_and_a_command_after_another_in_one_process(capsys):
    # score and inspect both define --data/--model/--max_length: each command's flags replace the other's.
    short = help_text(capsys, "inspect", "-h")
    assert short == help_text(capsys, "inspect", "--data=x", "--helpshort")
    score = help_text(capsys, "score", "--help")
    assert "Output .npz path." in score and "--source" not in score
    assert "--source=KIND" in help_text(capsys, "inspect", "--help")
    for name in ("analyze", "predict", "run", "replay"):  # share --matrix/--output, --tasks
        help_text(capsys, name, "--help")


def test_help_in_a_fresh_process_prints_nothing_else():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "forgetting_jax", "score", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--model=DIR" in result.stdout and "Hugging Face model directory" in result.stdout
    assert result.stderr == ""
