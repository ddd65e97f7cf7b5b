"""`forgetting-jax analyze`: low-rank fits, statistics and figures of a forgetting matrix.

  forgetting-jax analyze --matrix=M.npz --output=DIR

Writes DIR/fits.json (R^2 of the additive, multiplicative and rank-1..K fits, top tasks and
examples per component, source enrichment when `example_sources` is present, correlation with
representation similarity when `task_embeddings` and `example_embeddings` are present) and the
figures DIR/heatmap.png, DIR/r2_by_rank.png, DIR/components.png. Non-finite entries of Z (NaN: a
missing score, +inf/-inf: a diverged run) are left out of every fit and statistic; how many there
are, of each kind and per task, is logged as a warning and recorded in fits.json under "nonfinite".
"""

from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string("matrix", None, "Forgetting matrix .npz with Z [M, N] and tasks [M].")
flags.DEFINE_string("output", None, "Directory for fits.json and the figures.")
flags.DEFINE_integer("max_rank", 10, "Largest rank of the truncated SVD fits.")
flags.DEFINE_float("reg", 1e-3, "Ridge of the additive and multiplicative fits.")
flags.DEFINE_integer("top_n", 10, "Tasks and examples listed per component.")
flags.DEFINE_float("top_fraction", 0.05,
                   "Fraction of most-forgotten examples tested for source enrichment.")
flags.DEFINE_integer("chunk_columns", None, "Columns per streamed block (default: 256 MB).")

REQUIRED = ("matrix", "output")  # listed as required by --help


def main(argv) -> None:
    from forgetting_jax.commands.common import check_args, check_path, fail, reported_errors, setup_logging

    check_args("analyze", argv, REQUIRED)
    check_path("analyze", "output", FLAGS.output, "directory")
    if FLAGS.max_rank < 1:
        fail("analyze", "--max_rank must be at least 1", 2)
    from forgetting_jax.analysis.analyze import analyze_matrix

    setup_logging()
    with reported_errors("analyze"):
        analyze_matrix(FLAGS.matrix, FLAGS.output, FLAGS.max_rank, FLAGS.reg, FLAGS.top_n, FLAGS.top_fraction,
                       FLAGS.chunk_columns)
