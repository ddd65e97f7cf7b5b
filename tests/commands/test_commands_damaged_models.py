"""A damaged model directory is one line naming the file and what is wrong, for `score` and
`generate`: a truncated model.safetensors (an interrupted download), a header that claims more
bytes than the file has, weights of another size than config.json's."""

import json
import os
import shutil
import struct

import pytest

from train_helpers import make_hf_base
from command_line import keep_pytest_stderr, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LM = os.path.join(ROOT, "tests", "fixtures", "data", "lm.jsonl")


def setup_module():
    keep_pytest_stderr()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_base(str(tmp_path_factory.mktemp("hf") / "model"))


def _damaged(model_dir, tmp_path, how):
    copy = str(tmp_path / how)
    shutil.copytree(model_dir, copy)
    weights = os.path.join(copy, "model.safetensors")
    if how == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
    elif how == "header":
        with open(weights, "r+b") as f:
            f.write(struct.pack("<Q", 10 ** 12))
    else:  # "resized": config.json of a wider MLP than the weights
        path = os.path.join(copy, "config.json")
        with open(path) as f:
            config = json.load(f)
        config["intermediate_size"] *= 2
        with open(path, "w") as f:
            json.dump(config, f)
    return copy


@pytest.mark.parametrize("how, reason", [
    ("truncated", "model.safetensors: truncated: tensor"),
    ("header", "model.safetensors: its header claims 1,000,000,000,000 bytes"),
    ("resized", "which does not fit the shape"),
])
@pytest.mark.parametrize("command", ["score", "generate"])
def test_a_damaged_model_is_one_line(model_dir, tmp_path, capsys, how, reason, command):
    damaged = _damaged(model_dir, tmp_path, how)
    output = str(tmp_path / ("out.npz" if command == "score" else "out.jsonl"))
    assert run_cli(command, f"--model={damaged}", f"--data={LM}", "--format=lm", f"--output={output}") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"forgetting-jax {command}: error: {damaged}"), lines
    assert reason in lines[0], lines[0]
    assert not os.path.exists(output)
