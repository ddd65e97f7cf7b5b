"""`forgetting-jax analyze`: low-rank fits, statistics and figures of a forgetting matrix.

  forgetting-jax analyze --matrix=M.npz --output=DIR

Writes DIR/fits.json (R^2 of the additive, multiplicative and rank-1..K fits, top tasks and
examples per component, source enrichment when `example_sources` is present, correlation with
representation similarity when `task_embeddings` and `example_embeddings` are present) and the
figures DIR/heatmap.png, DIR/r2_by_rank.png, DIR/components.png.
"""

import sys

from absl import app, flags

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


def _fail(message: str) -> None:
    print(f"forgetting-jax analyze: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.matrix or not FLAGS.output:
        _fail("--matrix and --output are required")
    if FLAGS.max_rank < 1:
        _fail("--max_rank must be at least 1")
    from forgetting_jax.analysis.matrix_file import MatrixFileError
    from forgetting_jax.analysis.report import analyze_matrix
    from forgetting_jax.commands.common import setup_logging

    setup_logging()
    try:
        analyze_matrix(FLAGS.matrix, FLAGS.output, FLAGS.max_rank, FLAGS.reg, FLAGS.top_n, FLAGS.top_fraction,
                       FLAGS.chunk_columns)
    except MatrixFileError as err:
        _fail(str(err))
