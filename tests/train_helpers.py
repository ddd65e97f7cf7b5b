"""Shared pieces of the training tests: one tiny architecture and one set of step shapes, so the
tests of the loop and of the commands reuse each other's compiled steps."""

import os
import shutil

import jax

from forgetting_jax.data.demo import tokenizer_path
from forgetting_jax.train.mesh import make_mesh
from tiny_hf import make_tiny_model
from config_files import config_with

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.py")

# The demo config shrunk to the architecture of tiny_hf's llama (vocab of the demo tokenizer).
ARCH = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=72, dtype="float32")
TRAIN = dict(steps=8, lr=1e-3, warmup_steps=1, eval_every=2, save_every=2, log_every=4, micro_rows=2,
             row_length=128, batch_size=8, eval_rows=16)
PRETRAIN = dict(steps=4, batch_size=4, micro_rows=4, row_length=128, max_examples=64, log_every=2)


def flags(section: str, values: dict) -> list[str]:
    return [f"--config.{section}.{key}={value}" for key, value in values.items()]


def demo_config(**changes):
    """configs/demo.py with ARCH, TRAIN and PRETRAIN applied, then `changes` ({"train.lr": x})."""
    preset = {f"{section}.{k}": v for section, values in (("model", ARCH), ("train", TRAIN), ("pretrain", PRETRAIN))
              for k, v in values.items()}
    return config_with({**preset, **changes})


def demo_experiment(**changes):
    """demo_config(**changes) parsed: the Experiment that library entry points take."""
    from forgetting_jax.experiment import as_experiment

    return as_experiment(demo_config(**changes))


def make_hf_base(out_dir: str) -> str:
    """A random-weight HF llama directory with the demo tokenizer."""
    make_tiny_model("llama", out_dir, vocab_size=4096, hidden_size=32, layers=2)
    for name in os.listdir(tokenizer_path()):
        shutil.copyfile(os.path.join(tokenizer_path(), name), os.path.join(out_dir, name))
    return out_dir


def one_device():
    return make_mesh({"data": 1}, jax.devices()[:1])
