"""The `matrix` section of an experiment config: which upstream examples, how they are scored.

matrix  upstream          demo: chunks of the bundled corpus; lm: language-model text files
                          (Dolma style, chunked to max_length); chat: {id, messages} files; or a
                          source reader of `data.sources.READERS` (tulu, dolly, flan, ...)
        upstream_path     the file (or `datasets` name) for every upstream kind but demo
        upstream_kwargs   options of the upstream reader (those it takes; unset ones are left to
                          the reader): duplicates ("error", the reader's default, or "skip": skip
                          and count repeated document ids), source_field (a dotted field path, e.g.
                          "meta.pile_set_name"), qualify_ids (prefix document ids with their
                          source; default: Dolma-layout rows only)
        num_upstream      N: upstream examples kept (a seeded subsample with stable ids; 0: all)
        seed              the subsample's seed
        max_length        tokens kept per upstream example
        dtype             scoring dtype (float32 or bfloat16)
        tokens_per_batch  token slots per compiled scoring call
        keep_models       keep each task's fine-tuned model after its row is written
        max_rank          largest rank of the SVD fits in the report
        parallel_tasks    P: tasks fine-tuned at once in one compiled step (train/multitask.py);
                          1: one task at a time
        task_submeshes    T: with P > 1, the devices split into T sub-meshes (a `task` mesh axis),
                          P / T tasks on each; 1: all P tasks on every device
"""

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder


def matrix_defaults() -> ConfigDict:
    return ConfigDict(dict(
        upstream="demo", upstream_path="",
        upstream_kwargs=ConfigDict(dict(duplicates=placeholder(str), source_field=placeholder(str),
                                        qualify_ids=placeholder(bool))),
        num_upstream=2000, seed=0, max_length=1024, dtype="float32",
        tokens_per_batch=16384, keep_models=False, max_rank=10, parallel_tasks=1, task_submeshes=1,
    ))
