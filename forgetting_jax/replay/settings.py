"""The `replay` section of an experiment config: the replay experiment of `forgetting-jax replay`.

The fields, their defaults and their documentation: `forgetting_jax.experiment.ReplaySettings`.
"""

from ml_collections import ConfigDict


def replay_defaults() -> ConfigDict:
    from forgetting_jax.experiment import ReplaySettings, section_config

    return section_config(ReplaySettings())
