"""`forgetting-jax predict`: the forgetting-prediction protocol on a matrix file.

  forgetting-jax predict --matrix=M.npz --test_fraction=0.3 --k=30 --seeds=10 --output=R.json
  forgetting-jax predict --matrix=M.npz --test_tasks=a,b --methods=additive,knn --output=R.json
  forgetting-jax predict --matrix=W/matrix/forgetting.npz --workdir=W --config=configs/demo.py \
      --methods=rep_dot --rep_dot_encoder=full --rep_dot_steps=200 --test_fraction=0.3 --output=R.json

(the last trains rep_dot's encoder with its head, on the workspace's data)

R.json: {"methods": {NAME: {"rmse", "f1", "precision", "recall", "auc", "spearman",
"precision_at_k", "seconds", "fit_seconds", "rmse_std_over_seeds", "pooled", "per_task"}},
"headline", "best", "nonfinite", "settings": {...}, "test_tasks": [...]}; means over test tasks
and seeds, on unobserved entries only (unless --score_observed); "pooled" holds the metrics over
every scored entry at once, as the paper reports them: the headline figures.
"""

import logging

import numpy as np
from absl import flags

from forgetting_jax.commands.common import define_experiment_flags
from forgetting_jax.experiment import PredictSettings as _PREDICT
from forgetting_jax.predict.comparison import ComparisonSettings
from forgetting_jax.predict.methods import CompletionConfig
from forgetting_jax.predict.rep_dot import RepDotConfig

FLAGS = flags.FLAGS

flags.DEFINE_string("matrix", None, "Forgetting matrix .npz with Z [M, N] and tasks [M].")
flags.DEFINE_string("output", None, "Where to write the results JSON.")
flags.DEFINE_list("test_tasks", None, "Comma-separated test task names.")
flags.DEFINE_float("test_fraction", None, "Fraction of tasks drawn as test tasks (seeded).")
flags.DEFINE_integer("split_seed", _PREDICT.split_seed, "Seed of the --test_fraction draw.")
flags.DEFINE_integer("k", _PREDICT.k, "Observed entries per test task and seed.")
flags.DEFINE_integer("seeds", _PREDICT.seeds, "Seeds (draws of the k observed columns) per test task.")
flags.DEFINE_list("methods", "auto",
                  "Methods: additive, multiplicative, als, knn (completion); rep_sim, rep_dot (the "
                  "representation forecasters of prior work: they need the representations that "
                  "`forgetting-jax run` writes into the file); train_mean, observed_mean, random "
                  "(reference forecasters). auto: every one but random that the file allows.")
flags.DEFINE_enum("sampling", "uniform", ["uniform", "reference", "variance", "leverage", "spread"],
                  "How the k observed entries are drawn: uniform (k distinct observed columns per "
                  "test task and seed), reference (the paper's code: default_rng(seed).choice(N, "
                  "k), with replacement, the same columns for every test task; to reproduce its "
                  "numbers, with --score_observed), or chosen from the training rows among the test "
                  "task's observed columns: variance (the k columns that vary most across the "
                  "training rows), leverage (the k of highest leverage in their rank-5 SVD) -- both "
                  "the same columns under every seed, so the seeds then vary only the methods -- or "
                  "spread (a leverage-weighted draw per seed).")
flags.DEFINE_bool("score_observed", False,
                  "Also score the k observed entries, as the paper's first version's code's metrics do (its final "
                  "code scores the unobserved entries only, the default).")
flags.DEFINE_integer("rep_dot_steps", _PREDICT.rep_dot_steps, "Optimizer steps of the rep_dot head.")
flags.DEFINE_float("rep_dot_lr", _PREDICT.rep_dot_lr, "Learning rate of the rep_dot head.")
flags.DEFINE_integer("rep_dot_seeds", RepDotConfig.seeds,
                     "Heads of rep_dot trained at once (vmapped); predictions average them.")
flags.DEFINE_string("rep_dot_encoder", _PREDICT.rep_dot_encoder,
                    "What of rep_dot's encoder trains: frozen (the matrix file's representations), full (every "
                    "layer, as the paper's final code), top:K (the top K layers). full and top:K read the "
                    "workspace: give --workdir and --config.")
flags.DEFINE_string("rep_dot_model", None, "The trainable encoder's model directory or .gguf file (default: the "
                    "config's predict.rep_dot_model, whose empty value is the workspace's base model).")
flags.DEFINE_float("rep_dot_encoder_lr", _PREDICT.rep_dot_encoder_lr, "Learning rate of rep_dot's trainable encoder.")
flags.DEFINE_integer("rep_dot_batch", _PREDICT.rep_dot_batch, "Task examples per rep_dot step.")
flags.DEFINE_integer("rep_dot_eval_every", _PREDICT.rep_dot_eval_every, "Steps between rep_dot's step choices.")
flags.DEFINE_enum("rep_dot_select", _PREDICT.rep_dot_select, ["dev", "test"],
                  "Where rep_dot's best step is chosen: dev (held-out training tasks) or test (the test tasks, as "
                  "the paper's final code does; only to reproduce its numbers).")
flags.DEFINE_list("train_tasks", None, "Comma-separated tasks whose rows train every method (default: every "
                  "task that is not a test task; with --config, its predict.train_tasks).")
flags.DEFINE_float("threshold", None, "Forgetting above this counts as forgotten (F1, AUC); default 0.5 on a "
                   "binary matrix (lost answers), else 0.")
flags.DEFINE_integer("top_k", ComparisonSettings.top_k, "K of precision@K of the most forgotten examples.")
flags.DEFINE_integer("rank", _PREDICT.rank, "Rank of the als method.")
flags.DEFINE_float("reg", _PREDICT.reg, "Ridge of the training fits.")
flags.DEFINE_integer("max_iters", CompletionConfig.max_iters, "Most ALS sweeps of a training fit.")
flags.DEFINE_integer("knn_k", CompletionConfig.knn_k, "Neighbours of the knn method.")
flags.DEFINE_float("shrinkage", CompletionConfig.shrinkage, "Shrinkage of the knn similarity.")
flags.DEFINE_integer("max_rank_columns", ComparisonSettings.max_rank_columns,
                     "AUC and Spearman use a fixed random subset of this many columns when the "
                     "matrix is wider (exact otherwise).")
flags.DEFINE_integer("pair_batch", None, "Pairs per compiled call (default: from memory).")
flags.DEFINE_integer("chunk_columns", None, "Columns per streamed block (default: 256 MB).")
flags.DEFINE_bool("per_task", True, "Include per-task means in the output.")

REQUIRED = ("matrix", "output")  # listed as required by --help

define_experiment_flags()  # --config and --workdir: the workspace a trainable rep_dot encoder reads

log = logging.getLogger("forgetting_jax.predict")


def _fail(message: str) -> None:
    from forgetting_jax.commands.common import fail

    fail("predict", message, code=2)


def main(argv) -> None:
    from forgetting_jax.commands.common import check_args, check_path

    check_args("predict", argv, REQUIRED)
    check_path("predict", "output", FLAGS.output, "file")
    experiment = _experiment(argv)
    test_tasks, test_fraction, train_tasks = FLAGS.test_tasks, FLAGS.test_fraction, FLAGS.train_tasks
    if experiment is not None and test_tasks is None and test_fraction is None:
        p = experiment.predict
        test_tasks, test_fraction = (list(p.test_tasks), None) if p.test_tasks else (None, float(p.test_fraction))
    if experiment is not None and train_tasks is None and experiment.predict.train_tasks:
        train_tasks = list(experiment.predict.train_tasks)
    if (test_tasks is None) == (test_fraction is None):
        _fail("give exactly one of --test_tasks and --test_fraction")
    from forgetting_jax.experiment.choices import parse_rep_dot_encoder

    try:
        parse_rep_dot_encoder(FLAGS.rep_dot_encoder)
    except ValueError as err:
        _fail(f"--rep_dot_encoder: {err}")
    trains = FLAGS.rep_dot_encoder != "frozen"
    if trains and experiment is None:
        _fail(f"--rep_dot_encoder={FLAGS.rep_dot_encoder} trains rep_dot's encoder on the workspace's data: give "
              "--workdir and --config (those the matrix was built with)")
    from forgetting_jax.commands.common import setup_logging

    setup_logging()

    from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file
    from forgetting_jax.analysis.nonfinite import NonFinite
    from forgetting_jax.analysis.stats import json_safe
    from forgetting_jax.predict import comparison, protocol, registry
    from forgetting_jax.utils.io import write_json

    try:
        data = read_matrix_file(FLAGS.matrix)
    except MatrixFileError as err:
        _fail(str(err))
    config = CompletionConfig(rank=FLAGS.rank, reg=FLAGS.reg, max_iters=FLAGS.max_iters,
                              knn_k=FLAGS.knn_k, shrinkage=FLAGS.shrinkage)
    settings = comparison.ComparisonSettings(
        methods=None if FLAGS.methods in ([], ["auto"]) else tuple(FLAGS.methods), k=FLAGS.k, seeds=FLAGS.seeds,
        threshold=FLAGS.threshold, top_k=FLAGS.top_k, max_rank_columns=FLAGS.max_rank_columns,
        pair_batch=FLAGS.pair_batch, chunk_columns=FLAGS.chunk_columns, split_seed=FLAGS.split_seed,
        sampling=FLAGS.sampling, score_observed=FLAGS.score_observed, per_task=FLAGS.per_task,
        completion=config,
        rep_dot=comparison.rep_dot_config(FLAGS.rep_dot_steps, FLAGS.rep_dot_lr, FLAGS.rep_dot_seeds,
                                          FLAGS.rep_dot_encoder, FLAGS.rep_dot_encoder_lr, FLAGS.rep_dot_batch,
                                          FLAGS.rep_dot_eval_every, FLAGS.rep_dot_select),
        train_tasks=tuple(train_tasks) if train_tasks else None)
    names = settings.methods or comparison.available_methods(data, trains)
    try:  # the inputs of every method, checked before any work
        registry.check_methods(names, data, trains)
    except ValueError as err:
        _fail(f"--methods: {err} (file {FLAGS.matrix})")
    try:
        test_idx = protocol.select_test_tasks(data["tasks"], test_tasks, test_fraction, FLAGS.split_seed)
        if train_tasks:
            protocol.select_train_tasks(data["tasks"], train_tasks, test_idx)
    except protocol.ProtocolError as err:
        _fail(f"{FLAGS.matrix}: field 'tasks': {err}")
    if trains and "rep_dot" in names:
        import dataclasses

        from forgetting_jax.matrix.encoder_inputs import encoder_inputs

        try:
            inputs = encoder_inputs(experiment, FLAGS.workdir, data["tasks"], data["example_ids"],
                                    FLAGS.rep_dot_model)
        except (ValueError, OSError) as err:
            _fail(f"--rep_dot_encoder={FLAGS.rep_dot_encoder}: {err}")
        settings = dataclasses.replace(settings, encoder_inputs=inputs)
    z = data["Z"]
    tasks = data["tasks"]
    if FLAGS.sampling != "reference":
        for i in test_idx:
            observed = int(np.isfinite(z[i]).sum())
            if FLAGS.k < 1 or observed <= FLAGS.k:
                _fail(f"{FLAGS.matrix}: field 'Z': --k={FLAGS.k} observed columns requested, but "
                      f"test task {tasks[i]!r} has {observed} observed entries (k must be positive "
                      "and leave some entries to score)")
    log.info("%s: Z %d x %d (%.1f%% missing), %d test tasks", FLAGS.matrix, z.shape[0], z.shape[1],
             100.0 * (1.0 - _observed_fraction(z)), len(test_idx))
    try:
        result = comparison.compare(data, test_idx, settings, log_fn=log.info)
    except protocol.ProtocolError as err:
        _fail(f"{FLAGS.matrix}: field 'Z': {err}")
    except ValueError as err:  # a method's settings do not fit this matrix or encoder
        _fail(f"{FLAGS.matrix}: {err}")
    for part, counts in result["nonfinite"].items():
        if counts["count"]:
            log.warning("%s: %s rows: %s", FLAGS.matrix, part, NonFinite.from_dict(counts).describe("Z"))
    result["settings"]["matrix"] = FLAGS.matrix
    write_json(FLAGS.output, json_safe(result))
    for line in comparison.summary_lines(result):
        log.info("%s", line)
    log.info("wrote %s", FLAGS.output)


def _experiment(argv):
    """The parsed --config (with --workdir) when --config is given, else None."""
    if FLAGS.config is None:
        if FLAGS.workdir:
            _fail("--workdir needs --config (the config the matrix was built with)")
        return None
    from forgetting_jax.commands.common import check_experiment_args

    return check_experiment_args("predict", list(argv))


def _observed_fraction(z) -> float:
    step = max(1, z.shape[0] // 64)
    return float(np.isfinite(z[::step]).mean())
