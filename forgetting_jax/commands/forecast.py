"""`forgetting-jax forecast`: which upstream examples a fine-tuned checkpoint forgot, predicted from
k of them scored and the rows of a forgetting matrix of its base model.

  forgetting-jax forecast --matrix=M.npz --model=FINETUNED --k=30 --output=F.jsonl
      [--method=auto] [--select=uniform|variance|leverage|spread] [--verify=N] [--base=DIR]
  forgetting-jax forecast --matrix=M.npz --task_data=FILE --output=F.jsonl [--task_format=chat|lm]
      [--method=auto] [--base=DIR]

On the demo, for a task outside its matrix (after `forgetting-jax run --config=configs/demo.py --workdir=W`):

  forgetting-jax finetune --config=configs/demo.py --workdir=W --task=divide
  forgetting-jax forecast --matrix=W/experiments/demo/forgetting.npz --model=W/tasks/divide --k=30 --verify=2 \
      --output=F.jsonl

--model: a Hugging Face directory, a .gguf file, or a fine-tuning run directory of this project
(W/tasks/<task>/<fp>, with its exported model/; or W/tasks/<task>: its latest exported run),
fine-tuned from the base model of M.npz (a matrix written by `forgetting-jax run`, which records
how its upstream examples are read and which base scored them; the checkpoint's tokenizer, and a
run directory's base fingerprint, are checked against it; --base=DIR rescores the scored examples
with DIR instead). Only the k chosen upstream examples (and 2 x N with --verify) are scored.
F.jsonl: one line per upstream example, most forgotten first: {"id", "predicted", "rank",
"replay_weight" (softmax(predicted / T)), "observed" (the scored ones)}; F.summary.json beside it:
the method, the base check, what was scored, the verification.

--task_data instead of --model forecasts before fine-tuning: the task's training examples (JSON
lines, chat {id, messages} or lm {id, text}) represented by the base model (--base=DIR, or the
matrix's recorded base), the row forecast by rep_sim (or rep_dot, or train_mean; auto: the better
of rep_sim and train_mean in the protocol on the matrix). The matrix must hold the base model's
representations (`run` with --config.matrix.representations=True).
"""

from absl import flags

from forgetting_jax.experiment.choices import BASELINES, COMPLETION, REPRESENTATION

FLAGS = flags.FLAGS

flags.DEFINE_string("matrix", None, "Forgetting matrix .npz of the checkpoint's base model (from `run`).")
flags.DEFINE_string("model", None, "The fine-tuned checkpoint: a Hugging Face directory, a .gguf file or a "
                    "fine-tuning run directory W/tasks/<task>/<fp> (with model/).")
flags.DEFINE_string("task_data", None, "Instead of --model: the training data of a task not fine-tuned yet "
                    "(JSON lines), forecast from its representation by the base model.")
flags.DEFINE_enum("task_format", "chat", ["chat", "lm"], "--task_data's format: chat {id, messages}, lm {id, text}.")
flags.DEFINE_string("output", None, "Output .jsonl (the summary goes to .summary.json beside it).")
flags.DEFINE_integer("k", 30, "Upstream examples scored under the checkpoint.", lower_bound=1)
flags.DEFINE_enum("method", "auto", ["auto", *COMPLETION, *[b for b in BASELINES if b != "random"], *REPRESENTATION],
                  "Completion method; auto: the lowest pooled RMSE of the protocol on this matrix at this k. "
                  "With --task_data: rep_sim, rep_dot or train_mean.")
flags.DEFINE_enum("select", "uniform", ["uniform", "variance", "leverage", "spread"],
                  "Which k examples to score: a seeded uniform draw (the default, and the best measured), or by "
                  "the matrix's rows: variance across tasks, leverage in its low-rank fit, spread (drawn in "
                  "proportion to leverage).")
flags.DEFINE_integer("verify", 0, "Also score the top N predicted and N random examples and report precision.",
                     lower_bound=0)
flags.DEFINE_string("base", None, "A base model to rescore the scored examples with (when the checkpoint's base "
                    "cannot be checked against the matrix's).")
flags.DEFINE_float("temperature", 0.1, "T of the replay weights softmax(predicted / T).", lower_bound=1e-6)
flags.DEFINE_integer("seed", 0, "Seed of the uniform draw and of the verification's random examples.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Scoring dtype (default: the matrix's).")
flags.DEFINE_integer("tokens_per_batch", 16384, "Token slots per compiled scoring call.", lower_bound=1)

REQUIRED = ("matrix", "output")  # listed as required by --help; and one of --model, --task_data


def main(argv) -> None:
    from forgetting_jax.commands.common import fail, reported_errors, start_file_command

    start_file_command("forecast", argv, REQUIRED, FLAGS.output, ".jsonl")
    if FLAGS.base is not None and not FLAGS.base:
        fail("forecast", "--base is empty", 2)
    if bool(FLAGS.model) == bool(FLAGS.task_data):
        fail("forecast", "give one of --model (a fine-tuned checkpoint) and --task_data (a task's training data, "
                         "to forecast before fine-tuning)", 2)
    from forgetting_jax.forecast.forecast import ForecastSettings, forecast
    from forgetting_jax.forecast.output import write_forecast

    settings = ForecastSettings(k=FLAGS.k, method=FLAGS.method, select=FLAGS.select, seed=FLAGS.seed,
                                temperature=FLAGS.temperature, verify=FLAGS.verify, base=FLAGS.base,
                                dtype=FLAGS.dtype, tokens_per_batch=FLAGS.tokens_per_batch)
    with reported_errors("forecast"):
        if FLAGS.task_data:
            from forgetting_jax.forecast.before import forecast_before

            result = forecast_before(FLAGS.matrix, FLAGS.task_data, settings, FLAGS.task_format)
        else:
            result = forecast(FLAGS.matrix, FLAGS.model, settings)
        summary_path = write_forecast(FLAGS.output, result)
    _print(result, FLAGS.output, summary_path)


def _print(result, output: str, summary_path: str) -> None:
    s = result.summary
    top = result.lines()[:5]
    if "task_data" in s:
        print("\n".join([
            "", f"forecast before fine-tuning on {s['task_data']}: {s['represented_examples']} training examples "
            f"represented by the base {s['base']}, the row of {s['upstream_examples']} upstream examples forecast by "
            f"{s['method']} from {s['matrix_rows']} matrix rows, in {s['seconds']:.0f}s",
            "  most forgotten (predicted): " + ", ".join(f"{line['id']} {line['predicted']:+.3f}" for line in top),
            f"  wrote {output} and {summary_path}"]), flush=True)
        return
    lines = ["", f"forecast: {s['scored_examples']} of {s['upstream_examples']} upstream examples scored under "
             f"{s['model']} ({s['select']} selection, k = {s['k']}), the row completed by {s['method']} from "
             f"{s['matrix_rows']} matrix rows, in {s['seconds']:.0f}s; base check: "
             + ", ".join(f"{k} {v}" for k, v in s["base_check"].items()),
             "  most forgotten (predicted): " + ", ".join(f"{line['id']} {line['predicted']:+.3f}" for line in top)]
    v = s.get("verify")
    if v:
        lines.append(f"  verify: top {v['n']} predicted: {100 * v['precision_top']:.0f}% forgotten, "
                     f"{100 * v['top_in_top_decile']:.0f}% above the random sample's top decile, mean "
                     f"{v['mean_forgetting_top']:+.4f}; {v['n']} random: {100 * v['precision_random']:.0f}% forgotten, "
                     f"mean {v['mean_forgetting_random']:+.4f}; gap {v['gap']:+.4f}, Spearman "
                     + ("n/a" if v["spearman"] is None else f"{v['spearman']:.3f}"))
    lines.append(f"  wrote {output} and {summary_path}")
    print("\n".join(lines), flush=True)
