"""The typed experiment config (forgetting_jax/experiment/): every shipped config parses, bad
values fail with one message naming the field, the ConfigDict defaults are the dataclasses', and
the settings that enter run fingerprints did not move."""

import dataclasses
import os

import pytest
from ml_collections import ConfigDict

from forgetting_jax import experiment as ex
from forgetting_jax.experiment import ConfigError, Experiment, default_config, parse, to_config_dict
from forgetting_jax.models.config import scan_unroll
from forgetting_jax.utils.fingerprint import fingerprint
from tests.config_files import CONFIGS_DIR, load_config

CONFIG_NAMES = sorted(name[:-3] for name in os.listdir(CONFIGS_DIR) if name.endswith(".py"))


def _plain(config: ConfigDict) -> dict:
    """A config as nested dicts, where any value may be set (ConfigDicts refuse a wrong type)."""
    return config.to_dict()


def _error(config) -> str:
    with pytest.raises(ConfigError) as err:
        parse(config)
    return str(err.value)


# Every shipped config ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_parses(name):
    config = load_config(name)
    experiment = parse(config)
    assert experiment.name == name
    assert parse(to_config_dict(experiment)) == experiment  # the ConfigDict round trip loses nothing
    assert to_config_dict(experiment).to_dict() == config.to_dict()


def test_sections_are_typed():
    experiment = parse(load_config("demo"))
    assert isinstance(experiment.train, ex.TrainSettings) and isinstance(experiment.train.lora, ex.TrainLoraSettings)
    assert isinstance(experiment.pretrain, ex.PretrainSettings) and isinstance(experiment.pretrain, ex.TrainSettings)
    assert experiment.model.base == "pretrain" and experiment.model.hf_dir is None
    assert experiment.data.tasks == ex.DEMO_TASKS and experiment.train.steps == 50
    assert experiment.pretrain.batching == "rows" and experiment.pretrain.corpus is None
    assert isinstance(experiment.matrix.upstream_kwargs, dict) and isinstance(experiment.data.reader_kwargs, dict)


# One definition of every default ----------------------------------------------------------------

def _field_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = _field_defaults(type(value)) if dataclasses.is_dataclass(value) else value
    return out


def test_config_dict_defaults_are_the_dataclass_defaults():
    assert parse(default_config()) == Experiment()
    assert default_config().to_dict() == _field_defaults(Experiment)
    assert default_config().model.scan_layers is None  # by backend


def test_section_defaults_come_from_the_dataclasses():
    from forgetting_jax.experiment import train_defaults

    config = default_config()
    assert train_defaults().to_dict() == config.train.to_dict()
    for section, cls in [("matrix", ex.MatrixSettings), ("replay", ex.ReplaySettings),
                         ("distributed", ex.DistributedSettings), ("runtime", ex.RuntimeSettings)]:
        assert config[section].to_dict() == _field_defaults(cls), section
    assert config.pretrain.to_dict() == _field_defaults(ex.PretrainSettings)
    assert config.pretrain.lr == 1e-3 and config.pretrain.micro_rows == 8 and config.train.lr == 2e-6


def test_unset_optional_fields_keep_their_type_for_overrides():
    config = default_config()
    config.model.hf_dir = "/models/x"
    config.model.scan_layers = False
    config.matrix.upstream_kwargs.qualify_ids = True
    with pytest.raises(TypeError):
        config.model.tokenizer = 3
    experiment = parse(config)
    assert experiment.model.hf_dir == "/models/x" and experiment.model.scan_layers is False
    assert experiment.matrix.upstream_kwargs["qualify_ids"] is True


def test_allowed_values_are_those_of_the_code_that_reads_them():
    """The config's allowed values (experiment/choices.py) name exactly the entries of the stages'
    own tables."""
    from forgetting_jax.data.by_kind import FILE_KINDS
    from forgetting_jax.data.demo.tasks import TASKS
    from forgetting_jax.data.sources import READERS
    from forgetting_jax.experiment import choices
    from forgetting_jax.models.decoder import REMAT_POLICIES
    from forgetting_jax.predict.registry import KNOWN
    from forgetting_jax.replay.strategies import parse_strategy
    from forgetting_jax.score.exact_match import ANSWER_KINDS, UPSTREAM_KINDS

    assert choices.SOURCE_READERS == tuple(READERS)
    assert ex.UPSTREAM_KINDS == ("demo", "demo_tasks") + FILE_KINDS
    assert set(ex.TASK_READERS) <= set(FILE_KINDS) - {"lm", "upstream"}
    assert ex.ANSWER_KINDS == ("auto",) + ANSWER_KINDS
    assert set(UPSTREAM_KINDS) <= set(ex.UPSTREAM_KINDS)
    assert ex.REMAT_POLICIES == tuple(REMAT_POLICIES)
    assert choices.SUITE_TASKS == tuple(TASKS) and set(ex.DEMO_TASKS) <= set(TASKS)
    assert KNOWN == choices.PREDICT_METHODS
    assert parse_strategy("top:predicted:als") == choices.Strategy("top:predicted:als", "predicted", "als", True)


# Validation -------------------------------------------------------------------------------------

def test_a_bad_choice_names_the_field_and_the_allowed_values():
    config = default_config()
    config.train.batching = "exmaples"
    assert _error(config) == "config field train.batching='exmaples' is not one of examples, rows"
    for section, field, value, allowed in [
            ("model", "base", "hub", "hf, pretrain"), ("model", "remat_policy", "some", "none, full, dots, dots_no_batch"),
            ("model", "attention_impl", "flash", "auto, xla, cudnn"), ("model", "dtype", "fp16", "float32, bfloat16, float16"),
            ("model", "hf_fingerprint", "fast", "auto, content, metadata"), ("train", "method", "qlora", "full, lora"),
            ("data", "source", "hub", "demo, files"), ("matrix", "dtype", "int8", "float32, bfloat16, float16"),
            ("distributed", "mode", "yes", "auto, on, off"), ("pretrain", "method", "lora", "full"),
            ("train", "export_dtype", "fp8", "'', float32, bfloat16, float16")]:
        config = default_config()
        config[section][field] = value
        assert _error(config) == f"config field {section}.{field}={value!r} is not one of {allowed}"
    config = default_config()
    config.matrix.upstream = "dolmaa"
    assert _error(config).startswith("config field matrix.upstream='dolmaa' is not one of demo, demo_tasks, lm, chat, upstream")


def test_a_wrong_type_names_the_field():
    config = _plain(default_config())
    config["train"]["steps"] = "abc"
    assert _error(config) == "config field train.steps='abc' is not an int"
    for section, field, value, kind in [("train", "steps", True, "an int"), ("train", "steps", 2.5, "an int"),
                                        ("train", "lr", "fast", "a number"), ("train", "lr", None, "a number"),
                                        ("model", "tie_embeddings", 1, "a bool (True or False)"),
                                        ("model", "scan_layers", "yes", "a bool (True or False) or None"),
                                        ("data", "tasks", ("add", 3), "a list of strings"),
                                        ("data", "reader_kwargs", 5, "a section of options")]:
        config = _plain(default_config())
        config[section][field] = value
        assert _error(config) == f"config field {section}.{field}={value!r} is not {kind}"
    config = _plain(default_config())
    config["train"]["lora"]["rank"] = "8"
    assert _error(config) == "config field train.lora.rank='8' is not an int"


def test_ints_are_numbers_and_lists_are_tuples():
    config = _plain(default_config())
    config["train"]["lr"] = 1
    config["data"]["tasks"] = ["add", "parity"]
    experiment = parse(config)
    assert experiment.train.lr == 1.0 and isinstance(experiment.train.lr, float)
    assert experiment.data.tasks == ("add", "parity")


def test_an_unknown_field_or_section_is_named():
    config = default_config()
    config.train.update(dict(stpes=5))  # a config file's typo adds a field (the config is not locked yet)
    assert _error(config) == "config field train.stpes is unknown (did you mean train.steps?)"
    config = default_config()
    config.train.lora.update(dict(qq=1))
    assert _error(config).startswith("config field train.lora.qq is unknown (train.lora has rank, alpha")
    config = default_config()
    config.update(dict(trian=ConfigDict()))
    assert _error(config) == "config field trian is unknown (did you mean train?)"


def test_ranges():
    for section, field, value, rule in [("train", "steps", 0, "at least 1"), ("train", "batch_size", -8, "at least 1"),
                                        ("train", "row_length", 0, "at least 1"), ("train", "micro_rows", 0, "at least 1"),
                                        ("pretrain", "micro_rows", 0, "at least 1"), ("train", "warmup_steps", -1, "at least 0"),
                                        ("data", "max_length", 0, "at least 1"), ("data", "validation_fraction", 1.0, "below 1"),
                                        ("replay", "temperature", 0.0, "above 0"), ("replay", "ratio", 0.0, "above 0"),
                                        ("train", "b2", 1.0, "below 1"), ("matrix", "parallel_tasks", 0, "at least 1")]:
        config = default_config()
        config[section][field] = value
        assert _error(config) == f"config field {section}.{field}={value!r} must be {rule}"
    config = default_config()
    config.mesh.fsdp = 0
    assert _error(config) == "config field mesh.fsdp=0 must be -1 or at least 1"
    config = default_config()
    config.mesh.fsdp = -1
    assert _error(config).startswith("config fields mesh.data, mesh.fsdp are all -1")


def test_list_items_and_options():
    config = default_config()
    config.train.lora.targets = ("q", "x")
    assert _error(config) == ("config field train.lora.targets=('q', 'x') has 'x', not one of q, k, v, o, gate, "
                              "up, down")
    config = default_config()
    config.replay.strategies = ("none", "predicted:magic")
    assert _error(config).startswith("config field replay.strategies=('none', 'predicted:magic') has "
                                     "'predicted:magic': replay strategy 'predicted:magic'")
    config = default_config()
    config.matrix.upstream_kwargs.duplicates = "sometimes"
    assert "config field matrix.upstream_kwargs=" in _error(config)
    assert "duplicates='sometimes', not one of error, skip" in _error(config)


# The layer scan by backend ----------------------------------------------------------------------

def test_scan_unroll_by_backend():
    by_default = ex.ModelSettings()
    assert by_default.scan_layers is None
    assert scan_unroll(by_default, 16, "gpu") == 16  # unrolled on GPUs
    assert scan_unroll(by_default, 16, "tpu") == 1 and scan_unroll(by_default, 16, "cpu") == 1
    assert scan_unroll(by_default, 16) == 1  # the tests run on the CPU backend
    assert scan_unroll(dataclasses.replace(by_default, scan_layers=True), 16, "gpu") == 1
    assert scan_unroll(dataclasses.replace(by_default, scan_layers=False), 16, "cpu") == 16
    model = default_config().model
    assert scan_unroll(model, 4, "gpu") == 4 and scan_unroll(model, 4, "cpu") == 1
    model.scan_layers = True
    assert scan_unroll(model, 4, "gpu") == 1


# Fingerprints do not move -----------------------------------------------------------------------

# result_settings(config.train) and its fingerprint, computed before the schema moved to
# forgetting_jax/experiment/: a change here changes every run directory of the workspace.
DEMO_TRAIN = {"method": "full", "steps": 50, "warmup_steps": 5, "batch_size": 8, "batching": "examples",
              "row_length": 128, "max_segments": 64, "grad_clip": 1.0, "weight_decay": 0.0, "b1": 0.9, "b2": 0.999,
              "eps": 1e-08, "seed": 0, "eval_every": 10, "export_dtype": "", "lr": 0.0003}
OLMO_7B_TRAIN = {"method": "full", "steps": 1000, "warmup_steps": 10, "batch_size": 8, "batching": "examples",
                 "row_length": 1024, "max_segments": 64, "grad_clip": 1.0, "weight_decay": 0.0, "b1": 0.9,
                 "b2": 0.999, "eps": 1e-08, "seed": 0, "eval_every": 100, "export_dtype": "bfloat16", "result": "last",
                 "lr": 2e-06}  # result: the final code's last-step model (train.result=best adds no key)
FINGERPRINTS = {("demo", "full"): "8406dfcf72904056", ("olmo_7b_dolma_flan", "full"): "ee1319335cb85319",
                ("demo", "lora"): "53039b6ecbab21c6", ("olmo_7b_dolma_flan", "lora"): "62c3aa0cc433cc2e"}


@pytest.mark.parametrize("name,expected", [("demo", DEMO_TRAIN), ("olmo_7b_dolma_flan", OLMO_7B_TRAIN)])
def test_train_fingerprints_are_stable(name, expected):
    from forgetting_jax.train.recipe import result_settings

    config = load_config(name)
    for train in (config.train, to_config_dict(parse(config)).train):
        settings = result_settings(train)
        assert settings == expected
        assert [type(v) for v in settings.values()] == [type(v) for v in expected.values()]
        assert fingerprint(settings) == FINGERPRINTS[name, "full"]
        train.method = "lora"
        lora = result_settings(train)
        assert lora == dict(expected, method="lora", lr=1e-4, lora={
            "rank": 64, "alpha": 16.0, "dropout": 0.1, "targets": ["q", "k", "v", "o", "gate", "up", "down"]})
        assert fingerprint(lora) == FINGERPRINTS[name, "lora"]


# The command line -------------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("--config.train.batching=exmaples", "config field train.batching='exmaples' is not one of examples, rows"),
    ("--config.train.steps=abc", "config field train.steps='abc' is not an int"),
    ("--config.train.lr=fast", "config field train.lr='fast' is not a number"),
    ("--config.model.scan_layers=maybe", "config field model.scan_layers='maybe' is not a bool (True or False) or None"),
    ("--config.train.steps=0", "config field train.steps=0 must be at least 1"),
])
def test_a_bad_override_fails_in_one_line(override, message, capsys, tmp_path):
    from forgetting_jax import cli

    demo = os.path.join(CONFIGS_DIR, "demo.py")
    with pytest.raises(SystemExit) as exit_:
        cli.run(["forgetting-jax", "finetune", f"--config={demo}", f"--workdir={tmp_path}", "--task=add", override])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == f"forgetting-jax finetune: error: {message}\n"
    assert not os.listdir(tmp_path)  # failed before it touched the workspace
