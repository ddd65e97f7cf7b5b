"""What a run trains on: a task's train and validation examples, or the pre-training corpus.

Task data (config.data):
  source "demo"   the bundled demo task suite (`data.demo.tasks`), its own train/validation splits.
  source "files"  records read by `reader` (flan, tulu, dolly, mmlu, bbh, truthfulqa: the data
                  layer's readers; chat: the scorer's chat format) from `train_path`. A `{task}` in
                  the path names one file per task; otherwise records are selected by their task
                  label. Validation comes from `validation_path` (same rules) when set, else the
                  lowest-keyed `validation_fraction` of the task's records (at most `max_validation`).
Conversations are encoded with the tokenizer's chat template; only the response is trained on;
the last `max_length` tokens are kept.
"""

from typing import Any

import numpy as np

from forgetting_jax.data.records import Example
from forgetting_jax.experiment.choices import TASK_READERS
from forgetting_jax.utils.fingerprint import fingerprint



def examples_fingerprint(examples: list[Example]) -> str:
    """Content hash of tokenized examples: ids, tokens and trained-token masks, in order."""
    if not examples:
        return fingerprint([])
    lengths = np.asarray([len(e) for e in examples], np.int64)
    return fingerprint({"ids": [e.id for e in examples], "lengths": lengths,
                        "tokens": np.concatenate([e.ids for e in examples]).astype(np.int32),
                        "mask": np.concatenate([e.mask for e in examples]).astype(bool)})


def _read_task_records(data: Any, path: str, task: str) -> list[dict]:
    from forgetting_jax.data.by_kind import read_kind

    per_task_file = "{task}" in path
    path = path.replace("{task}", task)
    kwargs = dict(data.reader_kwargs or {})
    if per_task_file and data.reader in ("flan", "bbh"):
        kwargs.setdefault("task", task)
    if per_task_file and data.reader == "mmlu":
        kwargs.setdefault("subject", task)
    records = read_kind(data.reader, path, field="data.reader", kwargs=kwargs, skip_bad=data.skip_bad,
                        allowed=TASK_READERS)
    if per_task_file:
        return [dict(r, task=task) for r in records]
    chosen = [r for r in records if r.get("task") == task]
    if not chosen:
        found = sorted({r.get("task", "") for r in records})
        raise ValueError(f"{path}: no records of task {task!r}; tasks there: {', '.join(found[:20])}"
                         + (" ..." if len(found) > 20 else ""))
    return chosen


def discover_tasks(data: Any) -> list[str]:
    """The tasks present in config.data when data.tasks does not list them: the files matching a
    `{task}` path, or the distinct task labels of one file's records; sorted."""
    if data.source == "demo":
        from forgetting_jax.data.demo.tasks import task_names

        return list(task_names())
    path = data.train_path
    if not path:
        raise ValueError("data.tasks is empty and data.train_path is not set: no tasks to run")
    if "{task}" in path:
        import glob
        import re

        prefix, suffix = path.split("{task}", 1)
        pattern = re.compile(re.escape(prefix) + "(.+)" + re.escape(suffix) + "$")
        found = [pattern.match(p) for p in glob.glob(prefix + "*" + suffix)]
        tasks = sorted(m.group(1) for m in found if m)
    else:
        from forgetting_jax.data.by_kind import read_kind

        if data.reader not in TASK_READERS or data.reader == "chat":
            raise ValueError(f"data.tasks is empty and data.reader {data.reader!r} has no task labels")
        records = read_kind(data.reader, path, field="data.reader", kwargs=dict(data.reader_kwargs or {}),
                            skip_bad=data.skip_bad, allowed=TASK_READERS)
        tasks = sorted({r.get("task", "") for r in records} - {""})
    if not tasks:
        raise ValueError(f"{path}: no tasks found (set data.tasks)")
    return tasks


def task_examples(data: Any, task: str, tokenizer) -> dict[str, list[Example]]:
    """{"train": [...], "validation": [...]} Examples of one task (see the module docstring)."""
    if data.source == "demo":
        from forgetting_jax.data.demo.tasks import load_task_examples

        return {split: load_task_examples(task, split, tokenizer, data.max_length, seed=data.seed)
                for split in ("train", "validation")}
    if data.source != "files":
        raise ValueError(f"data.source {data.source!r} is not one of demo, files")
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.splits import split_records, subsample

    if not data.train_path:
        raise ValueError("data.train_path is required with data.source='files'")
    records = _read_task_records(data, data.train_path, task)
    if data.validation_path:
        splits = {"train": records, "validation": _read_task_records(data, data.validation_path, task)}
    else:
        splits = split_records(records, data.validation_fraction, seed=data.seed,
                               max_validation=data.max_validation or None)
    if data.max_train:
        splits["train"] = subsample(splits["train"], data.max_train, seed=data.seed)
    out = {}
    for split, chosen in splits.items():
        out[split] = encode_records(tokenizer, chosen, data.max_length, skip_bad=data.skip_bad,
                                    source=f"task {task} ({split})")
    if not out["train"]:
        raise ValueError(f"task {task!r} has no training examples")
    return out


def corpus_examples(pretrain: Any, tokenizer, max_length: int) -> dict[str, list[Example]]:
    """Pre-training chunks (every token after the first trained), split into train/validation.

    pretrain.corpus: a text file `read_upstream` reads (None: the bundled demo corpus).
    pretrain.demo_tasks: suite tasks whose training examples (chat, loss on the responses) join
    the training split.
    """
    from forgetting_jax.data.demo import corpus_path
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.sources import read_upstream
    from forgetting_jax.data.splits import split_records, subsample

    path = pretrain.corpus or corpus_path()
    records = read_upstream(path, tokenizer=tokenizer, max_length=max_length)
    if pretrain.max_examples:
        records = subsample(records, pretrain.max_examples, seed=pretrain.seed)
    records = [dict(r, task="corpus") for r in records]  # one split over the whole corpus
    splits = split_records(records, pretrain.validation_fraction, seed=pretrain.seed,
                           max_validation=pretrain.max_validation or None)
    data = {split: encode_records(tokenizer, chosen, max_length, skip_bad=True, source=path)
            for split, chosen in splits.items()}
    if pretrain.demo_tasks:
        from forgetting_jax.data.demo.tasks import suite_records

        data["train"] += encode_records(tokenizer, suite_records(pretrain.demo_tasks, "train"), max_length,
                                        source="the demo task suite")
    return data
