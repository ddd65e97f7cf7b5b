"""The shipped experiment configs (configs/*.py), loaded by name for tests."""

import importlib.util
import os

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name: str = "demo"):
    """configs/<name>.py's get_config(), unlocked so that tests may change any field."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", os.path.join(CONFIGS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.unlock()
    return config
