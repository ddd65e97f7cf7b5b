"""The shipped experiment configs (configs/*.py), loaded by name for tests, and the one helper
that shrinks one for a test (`config_with`: the micro demo and the training tests' presets)."""

import importlib.util
import os

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name: str = "demo", *args):
    """configs/<name>.py's get_config(*args), unlocked so that tests may change any field."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", os.path.join(CONFIGS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(*args)
    config.unlock()
    return config


def config_with(changes: dict, name: str = "demo"):
    """configs/<name>.py with `changes` ({"section.field": value}, nested sections dotted, e.g.
    "train.lora.rank") applied in order; lists become tuples where the field is a tuple."""
    config = load_config(name)
    for key, value in changes.items():
        *sections, field = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        current = node[field]
        node[field] = tuple(value) if isinstance(current, (tuple, list)) else value
    return config
