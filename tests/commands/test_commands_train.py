"""`forgetting-jax pretrain` and `finetune` on the demo config and on a random-weight HF directory."""

import os

import pytest

from forgetting_jax.models.loading import load_model
from train_helpers import ARCH, DEMO_CONFIG, PRETRAIN, TRAIN, flags, make_hf_base
from config_files import load_config
from command_line import keep_pytest_stderr, run_cli

TINY = [f"--config={DEMO_CONFIG}", "--config.mesh.num_devices=1"] + flags("model", ARCH) + flags(
    "train", TRAIN) + flags("pretrain", PRETRAIN)


def setup_module():
    keep_pytest_stderr()


def printed_dir(capsys):
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.slow
def test_pretrain_then_finetune_on_the_demo_config(tmp_path, capsys):
    workdir = str(tmp_path / "w")
    assert run_cli("pretrain", *TINY, f"--workdir={workdir}") == 0
    base_dir = printed_dir(capsys)
    assert base_dir.startswith(os.path.join(workdir, "base")) and os.path.isfile(os.path.join(base_dir, "config.json"))
    config, _ = load_model(base_dir)
    assert config.vocab_size == 4096 and config.hidden_size == 32

    assert run_cli("finetune", *TINY, f"--workdir={workdir}", "--task=add") == 0
    model_dir = printed_dir(capsys)
    assert model_dir.startswith(os.path.join(workdir, "tasks", "add"))
    assert os.path.isfile(os.path.join(os.path.dirname(model_dir), "metrics.jsonl"))
    assert len(os.listdir(os.path.join(workdir, "base"))) == 1  # the finished base was reused

    # A run finished without its model (as `run` leaves it without matrix.keep_models): finetune
    # trains it again and exports it.
    import shutil

    shutil.rmtree(model_dir)
    assert run_cli("finetune", *TINY, f"--workdir={workdir}", "--task=add") == 0
    assert printed_dir(capsys) == model_dir and os.path.isfile(os.path.join(model_dir, "config.json"))


def test_both_commands_on_a_random_weight_hf_directory(tmp_path, capsys):
    hf_dir = make_hf_base(str(tmp_path / "hf"))
    workdir = str(tmp_path / "w")
    assert run_cli("finetune", *TINY, f"--workdir={workdir}", "--task=add", "--config.model.base=hf",
                   f"--config.model.hf_dir={hf_dir}") == 0
    assert load_model(printed_dir(capsys))[0].num_kv_heads == 2
    # Continued pre-training of the HF model on the demo corpus.
    assert run_cli("pretrain", *TINY, f"--workdir={workdir}", f"--config.model.hf_dir={hf_dir}") == 0
    assert os.path.isfile(os.path.join(printed_dir(capsys), "model.safetensors"))


@pytest.mark.parametrize("args, message", [
    (["--task=add"], "--workdir is required"),
    (["--workdir=/tmp/x"], "--task is required"),
])
def test_finetune_reports_missing_flags(args, message, capsys):
    assert run_cli("finetune", f"--config={DEMO_CONFIG}", *args) == 2
    assert message in capsys.readouterr().err


def test_a_config_that_imports_its_base_needs_hf_dir(tmp_path, capsys):
    config = os.path.join(os.path.dirname(DEMO_CONFIG), "olmo_1b_dolma_flan.py")
    assert run_cli("finetune", f"--config={config}", f"--workdir={tmp_path}", "--task=x") == 1
    assert "--config.model.hf_dir" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "olmo_1b_dolma_flan", "olmo_7b_dolma_flan", "olmo_7b_instruct_tulu",
                                  "pythia_1b_pile", "single_gpu_debug"])
def test_configs_load_and_keep_the_paper_recipe(name):
    from forgetting_jax.train.recipe import step_settings
    from forgetting_jax.train.mesh import make_mesh

    config = load_config(name)
    tc = config.train
    assert (tc.method, tc.batch_size, tc.batching, tc.warmup_steps) == ("full", 8, "examples", 10 if name != "demo" else 5)
    assert (tc.lora.rank, tc.lora.alpha, tc.lora.dropout, tc.lora.lr) == (64, 16.0, 0.1, 1e-4)
    if name not in ("demo", "single_gpu_debug"):
        assert (tc.lr, config.data.max_length, tc.row_length) == (2e-6, 1024, 1024)
        assert tc.steps == (100 if name == "olmo_7b_instruct_tulu" else 1000)
    step, batch = step_settings(tc, make_mesh(config.mesh))
    assert step.micro_batches * step.micro_rows >= tc.batch_size
