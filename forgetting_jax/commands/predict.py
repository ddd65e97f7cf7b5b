"""`forgetting-jax predict`: the forgetting-prediction protocol on a matrix file.

  forgetting-jax predict --matrix=M.npz --test_fraction=0.3 --k=30 --seeds=10 --output=R.json
  forgetting-jax predict --matrix=M.npz --test_tasks=a,b --methods=additive,knn --output=R.json

R.json: {"methods": {NAME: {"rmse", "f1", "precision", "recall", "auc", "spearman",
"precision_at_k", "seconds", "fit_seconds", "rmse_std_over_seeds", "pooled", "per_task"}},
"settings": {...}, "test_tasks": [...]}; means over test tasks and seeds, on unobserved
entries only.
"""

import logging

import numpy as np
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string("matrix", None, "Forgetting matrix .npz with Z [M, N] and tasks [M].")
flags.DEFINE_string("output", None, "Where to write the results JSON.")
flags.DEFINE_list("test_tasks", None, "Comma-separated test task names.")
flags.DEFINE_float("test_fraction", None, "Fraction of tasks drawn as test tasks (seeded).")
flags.DEFINE_integer("split_seed", 0, "Seed of the --test_fraction draw.")
flags.DEFINE_integer("k", 30, "Observed entries per test task and seed.")
flags.DEFINE_integer("seeds", 10, "Seeds (draws of the k observed columns) per test task.")
flags.DEFINE_list("methods", "additive,multiplicative,als,knn,train_mean,observed_mean,random",
                  "Methods: additive, multiplicative, als, knn, train_mean, observed_mean, "
                  "random, rep_sim (needs task_embeddings and example_embeddings in the file).")
flags.DEFINE_float("threshold", 0.0, "Forgetting above this counts as forgotten (F1, AUC).")
flags.DEFINE_integer("top_k", 100, "K of precision@K of the most forgotten examples.")
flags.DEFINE_integer("rank", 5, "Rank of the als method.")
flags.DEFINE_float("reg", 1.0, "Ridge of the training fits.")
flags.DEFINE_integer("max_iters", 30, "Most ALS sweeps of a training fit.")
flags.DEFINE_integer("knn_k", 40, "Neighbours of the knn method.")
flags.DEFINE_float("shrinkage", 100.0, "Shrinkage of the knn similarity.")
flags.DEFINE_integer("max_rank_columns", 50_000,
                     "AUC and Spearman use a fixed random subset of this many columns when the "
                     "matrix is wider (exact otherwise).")
flags.DEFINE_integer("pair_batch", None, "Pairs per compiled call (default: from memory).")
flags.DEFINE_integer("chunk_columns", None, "Columns per streamed block (default: 256 MB).")
flags.DEFINE_bool("per_task", True, "Include per-task means in the output.")

REQUIRED = ("matrix", "output")  # listed as required by --help

log = logging.getLogger("forgetting_jax.predict")


def _fail(message: str) -> None:
    from forgetting_jax.commands.common import fail

    fail("predict", message, code=2)


def main(argv) -> None:
    from forgetting_jax.commands.common import check_args

    check_args("predict", argv, REQUIRED)
    if (FLAGS.test_tasks is None) == (FLAGS.test_fraction is None):
        _fail("give exactly one of --test_tasks and --test_fraction")
    from forgetting_jax.commands.common import setup_logging

    setup_logging()

    from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file
    from forgetting_jax.analysis.stats import json_safe
    from forgetting_jax.predict import protocol, registry
    from forgetting_jax.predict.methods import CompletionConfig
    from forgetting_jax.utils.io import write_json

    try:
        data = read_matrix_file(FLAGS.matrix)
    except MatrixFileError as err:
        _fail(str(err))
    config = CompletionConfig(rank=FLAGS.rank, reg=FLAGS.reg, max_iters=FLAGS.max_iters,
                              knn_k=FLAGS.knn_k, shrinkage=FLAGS.shrinkage)
    try:
        methods = registry.build_methods(FLAGS.methods, config, data.get("task_embeddings"),
                                         data.get("example_embeddings"))
    except ValueError as err:
        _fail(f"--methods: {err} (file {FLAGS.matrix})")
    try:
        test_idx = protocol.select_test_tasks(data["tasks"], FLAGS.test_tasks,
                                              FLAGS.test_fraction, FLAGS.split_seed)
    except protocol.ProtocolError as err:
        _fail(f"{FLAGS.matrix}: field 'tasks': {err}")
    z = data["Z"]
    tasks = data["tasks"]
    for i in test_idx:
        observed = int(np.isfinite(z[i]).sum())
        if FLAGS.k < 1 or observed <= FLAGS.k:
            _fail(f"{FLAGS.matrix}: field 'Z': --k={FLAGS.k} observed columns requested, but "
                  f"test task {tasks[i]!r} has {observed} observed entries (k must be positive "
                  "and leave some entries to score)")
    log.info("%s: Z %d x %d (%.1f%% missing), %d test tasks, methods %s", FLAGS.matrix,
                 z.shape[0], z.shape[1], 100.0 * (1.0 - _observed_fraction(z)), len(test_idx),
                 ",".join(methods))
    try:
        run = protocol.run_protocol(
            z, test_idx, methods, k=FLAGS.k, seeds=FLAGS.seeds, threshold=FLAGS.threshold,
            top_k=FLAGS.top_k, max_rank_columns=FLAGS.max_rank_columns,
            pair_batch=FLAGS.pair_batch, chunk_columns=FLAGS.chunk_columns,
            base_seed=FLAGS.split_seed, log=log.info)
    except protocol.ProtocolError as err:
        _fail(f"{FLAGS.matrix}: field 'Z': {err}")
    result = {
        "methods": protocol.summarize(run, tasks, per_task=FLAGS.per_task),
        "test_tasks": [tasks[i] for i in test_idx],
        "settings": dict(run["settings"], matrix=FLAGS.matrix, shape=list(z.shape),
                         methods=list(methods), rank=FLAGS.rank, reg=FLAGS.reg,
                         max_iters=FLAGS.max_iters, knn_k=FLAGS.knn_k,
                         shrinkage=FLAGS.shrinkage, split_seed=FLAGS.split_seed),
    }
    write_json(FLAGS.output, json_safe(result))
    for name, entry in result["methods"].items():
        log.info("%-14s rmse %.4f  f1 %.3f  auc %s  spearman %s  %.2fs", name,
                     entry["rmse"], entry["f1"], _fmt(entry["auc"]), _fmt(entry["spearman"]),
                     entry["seconds"])
    log.info("wrote %s", FLAGS.output)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _observed_fraction(z) -> float:
    step = max(1, z.shape[0] // 64)
    return float(np.isfinite(z[::step]).mean())
