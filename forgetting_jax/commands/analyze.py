"""`forgetting-jax analyze`: low-rank fits, statistics, similarity correlations and figures of a forgetting matrix.

  forgetting-jax analyze --matrix=M.npz --output=DIR
  forgetting-jax analyze --config=C --workdir=W --output=DIR [--embedder=E]

The first analyses a matrix file; the second the matrix of the experiment of config C in the
workspace W (W/experiments/<config.name>/forgetting.npz, built by `forgetting-jax run`; --matrix
beside --config names another file of that experiment). --embedder=E (a model directory or .gguf
file of a decoder family the project loads, not an encoder such as SentenceBERT) embeds the
experiment's texts (every upstream example, and each task's represented training examples) by
mean-pooling E's final hidden states, cached under W/matrix/text_embeddings/, for the
text_embedding_cosine measure: it needs the texts, so it needs --config and --workdir, unless the
matrix file holds text embeddings already (`run` with matrix.embedder writes them).

Writes DIR/fits.json (R^2 of the item-only, task-only, additive, multiplicative and rank-1..K
fits, top tasks and examples per component, source enrichment when `example_sources` is present,
the pooled correlations of Z with each similarity measure), DIR/similarity.json (Pearson and
Spearman of Z against every similarity measure the file allows, pooled and per task, with the
paper's figures and the R^2 table) and the figures DIR/heatmap.png, DIR/r2_by_rank.png,
DIR/components.png, DIR/similarity.png. Non-finite entries of Z (NaN: a missing score,
+inf/-inf: a diverged run) are left out of every fit and statistic; how many there are, of each
kind and per task, is logged as a warning and recorded in fits.json under "nonfinite".
"""

import logging
import os

from absl import flags

from forgetting_jax.commands.common import define_experiment_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("matrix", None, "Forgetting matrix .npz with Z [M, N] and tasks [M] (default with --config: "
                    "the experiment's, W/experiments/<config.name>/forgetting.npz).")
flags.DEFINE_string("output", None, "Directory for fits.json, similarity.json and the figures.")
flags.DEFINE_integer("max_rank", 10, "Largest rank of the truncated SVD fits.")
flags.DEFINE_float("reg", 1e-3, "Ridge of the additive and multiplicative fits.")
flags.DEFINE_integer("top_n", 10, "Tasks and examples listed per component.")
flags.DEFINE_float("top_fraction", 0.05,
                   "Fraction of most-forgotten examples tested for source enrichment.")
flags.DEFINE_integer("chunk_columns", None, "Columns per streamed block (default: 256 MB).")
flags.DEFINE_string("embedder", None, "Sentence-embedding model (a model directory or .gguf file of a decoder "
                    "family the project loads) whose mean-pooled states of the experiment's texts give the "
                    "text_embedding_cosine measure; needs --config and --workdir (default: the matrix file's own "
                    "text embeddings, when it holds them).")

REQUIRED = ("output",)  # listed as required by --help

define_experiment_flags()  # --config and --workdir: the experiment whose matrix (and texts) are analysed

log = logging.getLogger("forgetting_jax.analyze")

TEXT_FIELDS = ("task_text_embeddings", "example_text_embeddings")


def experiment_matrix(workdir: str, config_name: str) -> str:
    """W/experiments/<name>/forgetting.npz of the config named `config_name` (matrix/experiments.py);
    a warning names the other experiments of that name (other settings: `<name>-<fp8>`)."""
    from forgetting_jax.utils.fingerprint import task_filename

    name = task_filename(config_name or "experiment")
    root = os.path.join(workdir, "experiments")
    others = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else [])
                    if d.startswith(name + "-") and os.path.isfile(os.path.join(root, d, "forgetting.npz")))
    path = os.path.join(root, name, "forgetting.npz")
    if others:
        log.warning("experiments/%s is analysed; %s hold(s) experiment %r with other settings (pass "
                    "--matrix=%s/<dir>/forgetting.npz for one of them)", name, ", ".join(others), config_name, root)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: experiment {config_name!r} has no matrix in {workdir} (run `forgetting-jax run` "
                         "with this config and workspace first)")
    return path


def _holds_text_embeddings(path: str) -> bool:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            return all(key in npz.files for key in TEXT_FIELDS)
    except (OSError, ValueError):
        return False  # read_matrix_file reports it


def _analyze(matrix: str, extra_arrays=None) -> None:
    from forgetting_jax.analysis.analyze import analyze_matrix

    analyze_matrix(matrix, FLAGS.output, FLAGS.max_rank, FLAGS.reg, FLAGS.top_n, FLAGS.top_fraction,
                   FLAGS.chunk_columns, extra_arrays=extra_arrays)


def main(argv) -> None:
    from forgetting_jax.commands.common import (check_args, check_path, fail, reported_errors, run_experiment,
                                                setup_logging)

    check_args("analyze", argv, REQUIRED)
    check_path("analyze", "output", FLAGS.output, "directory")
    if FLAGS.max_rank < 1:
        fail("analyze", "--max_rank must be at least 1", 2)
    if FLAGS.config is None:
        if FLAGS.workdir:
            fail("analyze", "--workdir needs --config (the config of the experiment to analyse)", 2)
        if not FLAGS.matrix:
            fail("analyze", "give --matrix=M.npz, or --config and --workdir (the experiment's matrix)", 2)
        if FLAGS.embedder and os.path.isfile(FLAGS.matrix) and not _holds_text_embeddings(FLAGS.matrix):
            fail("analyze", f"--embedder embeds the texts of the matrix's tasks and upstream examples, which "
                            f"{FLAGS.matrix} does not hold: pass --config and --workdir (the experiment the matrix "
                            "was built with) instead of, or beside, --matrix", 2)
        setup_logging()
        if FLAGS.embedder:
            log.info("%s holds text embeddings already: --embedder=%s is not needed", FLAGS.matrix, FLAGS.embedder)
        with reported_errors("analyze"):
            _analyze(FLAGS.matrix)
        return

    def body(experiment):
        matrix = FLAGS.matrix or experiment_matrix(FLAGS.workdir, experiment.name)
        extra = None
        if FLAGS.embedder:
            from forgetting_jax.analysis.matrix_file import read_matrix_file
            from forgetting_jax.matrix.text_embeddings import text_embedding_arrays

            data = read_matrix_file(matrix)
            extra = text_embedding_arrays(experiment, FLAGS.workdir, data["tasks"], data["example_ids"],
                                          embedder=FLAGS.embedder)
        _analyze(matrix, extra)

    run_experiment("analyze", argv, body, REQUIRED, lock=bool(FLAGS.embedder))
