"""The experiment config: one frozen dataclass per section, the paper's recipe as the defaults.

An experiment is a `name` and these sections (each class documents its fields):

  model        ModelSettings        the base model, its architecture and compute settings
  mesh         MeshSettings         the device mesh
  data         DataSettings         the tasks and their examples
  train        TrainSettings        fine-tuning (`forgetting-jax finetune`); lora: TrainLoraSettings
  pretrain     PretrainSettings     pre-training (`forgetting-jax pretrain`): train's fields and
                                    the corpus
  matrix       MatrixSettings       the upstream examples and how they are scored
  predict      PredictSettings      the report's forgetting-prediction comparison
  replay       ReplaySettings       the replay experiment (`forgetting-jax replay`)
  distributed  DistributedSettings  joining the processes of a multi-host run
  runtime      RuntimeSettings      the compilation cache and XLA flags

The command line and configs/*.py work on an ml_collections ConfigDict (`default_config()`, built
from these dataclasses: every default is defined once, here; configs/*.py change what differs,
`--config.section.field=value` overrides). `parse(config)` converts that ConfigDict into an
`Experiment` and validates it once (types, allowed values, ranges, unknown fields), raising a
`ConfigError` that names the field, e.g.

  config field train.batching='exmaples' is not one of examples, rows

The package: choices.py (the allowed values of enumerated fields, which the stages import),
fields.py (how a field declares its rules), sections.py (the dataclasses), parse.py (parse,
as_experiment), config_dict.py (ConfigDicts and command-line comma lists). Every experiment
command parses its config at start (`commands.common.check_experiment_args`
returns the Experiment).
"""

from forgetting_jax.experiment.config_dict import (config_beside, default_config, section_config,
                                                   split_comma_lists, to_config_dict, train_defaults)
from forgetting_jax.experiment.parse import as_experiment, field_kind, parse
from forgetting_jax.experiment.choices import (
    ANSWER_KINDS, ATTENTION_IMPLS, BASES, BATCHINGS, CPU_COLLECTIVES, DATA_SOURCES, DEMO_TASKS, DTYPES, EXPORT_DTYPES,
    FAMILIES, HF_FINGERPRINTS, LORA_TARGETS, METHODS, METRICS, REMAT_POLICIES, TASK_READERS, UPSTREAM_KINDS,
    ConfigError)
from forgetting_jax.experiment.sections import (
    DataSettings, DistributedSettings, Experiment, MatrixSettings, MeshSettings, ModelSettings, PredictSettings,
    PretrainSettings, ReplaySettings, RuntimeSettings, TrainLoraSettings, TrainSettings)
from forgetting_jax.utils.runtime import MODES

TARGETS = LORA_TARGETS

__all__ = [
    "ANSWER_KINDS", "ATTENTION_IMPLS", "BASES", "BATCHINGS", "CPU_COLLECTIVES", "DATA_SOURCES", "DEMO_TASKS",
    "DTYPES", "EXPORT_DTYPES", "FAMILIES", "HF_FINGERPRINTS", "METHODS", "METRICS", "MODES", "REMAT_POLICIES",
    "TARGETS", "TASK_READERS", "UPSTREAM_KINDS",
    "ConfigError", "DataSettings", "DistributedSettings", "Experiment", "MatrixSettings", "MeshSettings",
    "ModelSettings", "PredictSettings", "PretrainSettings", "ReplaySettings", "RuntimeSettings", "TrainLoraSettings",
    "TrainSettings", "as_experiment", "config_beside", "default_config", "field_kind", "parse", "section_config",
    "split_comma_lists",
    "to_config_dict", "train_defaults",
]
