"""Fine-tuning runs: the loss goes down, the best checkpoint is the model, runs are reused only on
an exact fingerprint match, and a killed run resumes to the same end."""

import json
import os

import numpy as np
import pytest

from forgetting_jax.models.loading import load_model
from forgetting_jax.score.scorer import Scorer
from forgetting_jax.train import driver
from forgetting_jax.train.base import base_model
from forgetting_jax.train.finetune import finetune, plan_finetune
from forgetting_jax.train.metrics import read_metrics
from train_helpers import demo_config, demo_experiment, make_hf_base, one_device


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    return make_hf_base(str(tmp_path_factory.mktemp("hf_base")))


@pytest.fixture(scope="module")
def finished(hf_base, tmp_path_factory):
    """One finished fine-tuning run of the random-weight HF model on the demo task `add`."""
    workdir = str(tmp_path_factory.mktemp("work"))
    config = demo_experiment(**{"model.base": "hf", "model.hf_dir": hf_base})
    return config, workdir, finetune(config, workdir, "add", mesh=one_device())


def val_losses(run_dir):
    return {r["step"]: r["val_loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "val_loss" in r}


def test_finetune_lowers_the_loss_and_exports_the_best_checkpoint(finished):
    config, workdir, result = finished
    assert not result.reused and result.steps == 8
    losses = val_losses(result.run_dir)
    assert sorted(losses) == [0, 2, 4, 6, 8]
    assert result.best_val_loss == min(losses[s] for s in (2, 4, 6, 8)) < losses[0] - 0.5
    records = [r for r in read_metrics(os.path.join(result.run_dir, "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(r["examples"] == 8 and r["tokens_per_second"] > 0 for r in records)
    assert not os.path.isdir(os.path.join(result.run_dir, "checkpoints"))  # keep_checkpoints is off
    with open(os.path.join(result.run_dir, "fingerprint.json")) as f:
        assert json.load(f)["fingerprint"] == result.fingerprint

    # The exported model scores the validation split at the best validation loss.
    model_config, params = load_model(result.model_dir)
    validation = plan_finetune(config, workdir, "add", base_model(config, workdir)).examples["validation"]
    nll, count, _ = Scorer(model_config, params).score([e.pair for e in validation])
    np.testing.assert_allclose((nll * count).sum() / count.sum(), result.best_val_loss, rtol=2e-4)


def test_an_identical_run_is_reused_and_a_changed_setting_retrains(finished):
    config, workdir, first = finished
    again = finetune(config, workdir, "add", mesh=one_device())
    assert again.reused and again.run_dir == first.run_dir and again.best_step == first.best_step

    base = base_model(config, workdir)
    changed_lr = plan_finetune(demo_experiment(**{"model.base": "hf", "model.hf_dir": config.model.hf_dir,
                                              "train.lr": 2e-3}), workdir, "add", base)
    assert changed_lr.fingerprint != first.fingerprint and not changed_lr.finished

    changed = demo_experiment(**{"model.base": "hf", "model.hf_dir": config.model.hf_dir, "train.eval_every": 4})
    second = finetune(changed, workdir, "add", mesh=one_device())
    assert not second.reused and second.run_dir != first.run_dir
    assert sorted(val_losses(second.run_dir)) == [0, 4, 8]
    assert os.path.isfile(os.path.join(first.run_dir, "fingerprint.json"))  # the other run is untouched
    assert os.path.isdir(first.model_dir)


class Killed(Exception):
    pass


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(finished, tmp_path):
    config, _, uninterrupted = finished
    workdir = str(tmp_path)

    class KillAfterFive(driver.Hook):
        def after_step(self, step, params_fn):
            if step == 5:
                raise Killed

    with pytest.raises(Killed):
        finetune(config, workdir, "add", mesh=one_device(), hooks=[KillAfterFive()])
    run_dir = os.path.join(workdir, "tasks", "add", uninterrupted.fingerprint)
    assert not os.path.exists(os.path.join(run_dir, "fingerprint.json"))
    assert "4" in os.listdir(os.path.join(run_dir, "checkpoints"))  # saved every 2 steps: resumes from 4
    assert 4 <= max(r["step"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))) <= 5

    resumed = finetune(config, workdir, "add", mesh=one_device())
    assert not resumed.reused and resumed.run_dir == run_dir
    assert _losses(run_dir) == _losses(uninterrupted.run_dir)
    assert (resumed.best_step, resumed.best_val_loss) == (uninterrupted.best_step, uninterrupted.best_val_loss)
    _, resumed_params = load_model(resumed.model_dir)
    _, expected_params = load_model(uninterrupted.model_dir)
    for a, b in zip(_leaves(resumed_params), _leaves(expected_params)):
        np.testing.assert_array_equal(a, b)


def _losses(run_dir):
    keys = ("step", "loss", "val_loss", "best", "lr", "grad_norm", "loss_tokens")
    return [{k: r[k] for k in keys if k in r} for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))]


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.slow
def test_lora_trains_adapters_and_exports_the_merged_model(finished, hf_base):
    _, workdir, full = finished
    config = demo_experiment(**{"model.base": "hf", "model.hf_dir": hf_base, "train.method": "lora",
                            "train.lora.rank": 4, "train.lora.lr": 1e-2})
    result = finetune(config, workdir, "add", mesh=one_device())
    assert result.run_dir != full.run_dir
    losses = val_losses(result.run_dir)
    assert result.best_val_loss < losses[0] - 0.1
    _, merged = load_model(result.model_dir)
    _, base = load_model(hf_base)
    assert not np.allclose(merged["layers"]["attn"]["q"]["kernel"], base["layers"]["attn"]["q"]["kernel"])
    np.testing.assert_array_equal(merged["layers"]["attn_norm"]["scale"], base["layers"]["attn_norm"]["scale"])


def test_task_data_from_files(tmp_path):
    from forgetting_jax.data.demo.corpus import load_demo_tokenizer
    from forgetting_jax.train.inputs import task_examples

    lines = [json.dumps({"inputs": f"What is {i} plus {i}?", "targets": str(2 * i), "task": "ab"[i % 2]})
             for i in range(40)]
    (tmp_path / "flan.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:10]) + "\n")
    config = demo_config(**{"data.source": "files", "data.reader": "flan", "data.validation_fraction": 0.25,
                            "data.train_path": str(tmp_path / "flan.jsonl")})
    tokenizer = load_demo_tokenizer()
    split = task_examples(config.data, "a", tokenizer)
    assert (len(split["train"]), len(split["validation"])) == (15, 5)
    assert all(e.task == "a" and e.mask.sum() > 0 for e in split["train"] + split["validation"])
    assert not {e.id for e in split["train"]} & {e.id for e in split["validation"]}
    config.data.train_path = str(tmp_path / "{task}.jsonl")
    assert len(task_examples(config.data, "a", tokenizer)["train"]) == 8  # all 10 rows of a.jsonl, 2 held out
    with pytest.raises(ValueError, match="no records of task 'c'"):
        config.data.train_path = str(tmp_path / "flan.jsonl")
        task_examples(config.data, "c", tokenizer)
