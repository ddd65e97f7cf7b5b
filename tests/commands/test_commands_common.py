"""Comma lists on the command line (commands/common.py): --config.data.tasks=a,b,c is the tasks a, b, c."""

import os
import sys

import pytest
from absl import flags
from ml_collections import ConfigDict

from forgetting_jax.commands.common import define_experiment_flags, split_config_lists
from forgetting_jax.experiment import default_config, split_comma_lists

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "configs", "demo.py")


def test_split_comma_lists_every_list_field():
    config = default_config()
    config.data.tasks = ("a,b, c",)
    config.replay.test_tasks = ("x",)
    config.replay.strategies = (" none , random,",)
    config.train.lora.targets = ("q,v",)
    config.data.reader_kwargs = ConfigDict(dict(columns=["p,q"]))
    split_comma_lists(config)
    assert config.data.tasks == ("a", "b", "c")
    assert config.replay.test_tasks == ("x",)
    assert config.replay.strategies == ("none", "random")
    assert config.train.lora.targets == ("q", "v")
    assert config.data.reader_kwargs.columns == ["p", "q"]  # lists stay lists


def test_split_only_the_named_fields():
    config = default_config()
    config.data.tasks = ("a,b",)
    config.replay.test_tasks = ("c,d",)
    split_comma_lists(config, ["data.tasks", "data.seed", "no.such.field", "replay"])
    assert config.data.tasks == ("a", "b") and config.replay.test_tasks == ("c,d",)
    config.data.tasks = ("",)
    split_comma_lists(config, ["data.tasks"])
    assert config.data.tasks == ()


@pytest.fixture
def parse():
    define_experiment_flags()
    saved = sys.argv

    def parse(*overrides):
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # as cli.run does after each run: the next parse redefines them
        argv = ["forgetting-jax run", f"--config={DEMO}", "--workdir=/tmp/w", *overrides]
        sys.argv = argv  # ml_collections reads the --config.* overrides from sys.argv
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        split_config_lists()
        return flags.FLAGS.config

    yield parse
    sys.argv = saved
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()


def test_flags_parse_comma_lists(parse):
    config = parse("--config.data.tasks=add,subtract", "--config.replay.test_tasks= divide , to_hex",
                   "--config.train.lora.targets=q,v", "--config.train.lr=1e-4")
    assert config.data.tasks == ("add", "subtract")
    assert config.replay.test_tasks == ("divide", "to_hex")
    assert config.train.lora.targets == ("q", "v")
    assert config.train.lr == 1e-4
    assert config.replay.strategies[0] == "none" and len(config.replay.strategies) == 9  # not overridden


def test_flags_keep_other_list_forms(parse):
    assert parse("--config.data.tasks=add").data.tasks == ("add",)
    assert parse("--config.data.tasks=('add','parity')").data.tasks == ("add", "parity")
    assert parse("--config.data.tasks=").data.tasks == ()
