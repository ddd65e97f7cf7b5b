"""Moved to `forgetting_jax.experiment` (the typed experiment config); re-exported here until the
imports of this module are gone."""

from forgetting_jax.experiment import DEMO_TASKS, default_config, split_comma_lists, train_defaults

__all__ = ["DEMO_TASKS", "default_config", "split_comma_lists", "train_defaults"]
