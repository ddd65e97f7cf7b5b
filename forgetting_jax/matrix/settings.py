"""The `matrix` section of an experiment config: which upstream examples, how they are scored.

The fields, their defaults and their documentation: `forgetting_jax.experiment.MatrixSettings`.
"""

from ml_collections import ConfigDict


def matrix_defaults() -> ConfigDict:
    from forgetting_jax.experiment import MatrixSettings, section_config

    return section_config(MatrixSettings())
