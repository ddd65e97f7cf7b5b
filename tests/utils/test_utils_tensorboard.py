"""TensorBoard event files written without TensorFlow (utils/tensorboard.py), read back by
TensorBoard's own reader: the CRC-32C framing, scalars by tag and step, a resumed run's log
rewritten to read like one uninterrupted run, and every training run of a micro workspace."""

import glob
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from forgetting_jax.train.metrics import MetricsLog, read_metrics
from forgetting_jax.utils.tensorboard import ScalarWriter, crc32c


def scalars_of(directory):
    acc = EventAccumulator(directory)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_crc32c_is_castagnoli():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0


def test_scalars_read_back_by_tensorboard(tmp_path):
    writer = ScalarWriter(str(tmp_path))
    writer.add(1, {"train/loss": 2.5, "train/learning_rate": 1e-4})
    writer.add(2, {"train/loss": 2.0})
    writer.add(-3, {"validation/loss": 0.125})  # int64 steps, negatives included
    writer.close()
    got = scalars_of(str(tmp_path))
    assert got["train/loss"] == [(1, 2.5), (2, 2.0)]
    assert got["train/learning_rate"] == [(1, pytest.approx(1e-4))]
    assert got["validation/loss"] == [(-3, 0.125)]


def test_a_resumed_log_reads_like_one_run(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    log = MetricsLog(path)
    for step in range(1, 6):
        log.write({"step": step, "loss": float(step), "lr": 0.1, "grad_norm": 1.0, "tokens_per_second": 10.0,
                   "mfu": None})
    log.write({"step": 5, "val_loss": 0.5, "best": True})
    log.close()
    log = MetricsLog(path, resume_step=3)  # resumed from step 3: steps 4 and 5 are trained again
    log.write({"step": 4, "loss": 40.0, "lr": 0.1, "grad_norm": 1.0, "tokens_per_second": 10.0, "mfu": None})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    got = scalars_of(str(tmp_path))
    assert got["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert "train/mfu" not in got and "validation/loss" not in got  # None is not a scalar; step 5 is gone
    assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 1


def test_every_run_of_a_workspace_has_its_curves(micro_matrix):
    workdir = micro_matrix[0]
    runs = [os.path.dirname(p) for p in glob.glob(os.path.join(workdir, "*", "**", "metrics.jsonl"), recursive=True)]
    assert any("/base/" in r for r in runs) and sum("/tasks/" in r for r in runs) >= 3
    for run in runs:
        records = read_metrics(os.path.join(run, "metrics.jsonl"))
        got = scalars_of(run)
        train = [r for r in records if "loss" in r]
        assert [step for step, _ in got["train/loss"]] == [r["step"] for r in train], run
        assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in train], rel=1e-6)
        validation = [r for r in records if "val_loss" in r]
        assert len(got.get("validation/loss", [])) == len(validation), run
        assert {"train/learning_rate", "train/grad_norm", "train/tokens_per_second"} <= set(got)
