"""The allowed values of the config's enumerated fields, defined here once and imported by the
stages that read them (the models, the data readers, LoRA, the predictors, replay): the config is
checked without loading any of them. tests/test_experiment_config.py checks that each stage's own
table (the decoder's remat policies, the readers, the demo suite) has exactly these names.
"""

import dataclasses


class ConfigError(ValueError):
    """A config (an experiment's, or a model's config.json) with a value that is not allowed; the
    message names the field."""


# models (models/config.py, models/decoder.py, models/attention.py)
FAMILIES = ("llama", "mistral", "qwen2", "olmo", "olmo2", "gpt_neox", "mpt")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")  # activation checkpointing per layer
BASES = ("hf", "pretrain")  # train/base.py base_model
HF_FINGERPRINTS = ("auto", "content", "metadata")  # train/base.py

# training (train/)
METHODS = ("full", "lora")
BATCHINGS = ("examples", "rows")  # train/batches.py
EXPORT_DTYPES = ("",) + DTYPES  # "": the run's param_dtype
RESULT_STEPS = ("best", "last")  # train.result: the run's result is its best validation step or its last
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # train/lora.py

# data (data/, train/inputs.py)
DATA_SOURCES = ("demo", "files")
SOURCE_READERS = ("upstream", "tulu", "dolly", "flan", "mmlu", "bbh", "truthfulqa")  # data/sources.py READERS
TASK_READERS = ("flan", "tulu", "dolly", "mmlu", "bbh", "truthfulqa", "chat")  # data.reader
UPSTREAM_KINDS = ("demo", "demo_tasks", "lm", "chat") + SOURCE_READERS  # matrix.upstream
DUPLICATES = ("error", "skip")  # data/sources_text.py: repeated document ids
# The bundled demo task suite (data/demo/tasks.py), and the 24 tasks the demo experiment fine-tunes on.
SUITE_TASKS = (
    "add", "subtract", "multiply", "divide", "remainder", "larger", "parity", "digit_sum", "reverse_word",
    "uppercase", "sort_letters", "count_letter", "acronym", "remove_vowels", "word_count", "palindrome",
    "shift_letters", "to_binary", "to_hex", "roman", "number_words", "date_format", "time_24h", "snake_to_camel",
    "kv_to_json", "sort_numbers", "max_number", "capital", "element_symbol", "antonym", "code_lookup",
    "docstring_function", "definition_family",
)
DEMO_TASKS = (
    "add", "subtract", "multiply", "remainder", "parity", "digit_sum", "reverse_word", "uppercase",
    "sort_letters", "count_letter", "acronym", "remove_vowels", "word_count", "shift_letters", "to_binary",
    "roman", "number_words", "date_format", "snake_to_camel", "kv_to_json", "sort_numbers", "capital",
    "antonym", "docstring_function",
)

# the matrix (matrix/, score/exact_match.py)
METRICS = ("nll", "exact_match")
ON_DIVERGENCE = ("stop", "skip")  # matrix.on_divergence: a task whose fine-tuning diverges
ANSWER_KINDS = ("auto", "mmlu", "bbh", "truthfulqa", "short", "demo")  # auto: by upstream
EM_COLUMNS = ("base_correct", "all")  # matrix.em_columns: the upstream examples that are exact-match columns

# processes (utils/runtime.py, which defines distributed.mode's MODES)
CPU_COLLECTIVES = ("", "gloo", "mpi")  # "": jax's default

# prediction (predict/registry.py)
COMPLETION = ("additive", "multiplicative", "als", "knn")
REPRESENTATION = ("rep_sim", "rep_dot")  # the forecasters of prior work, from representations
BASELINES = ("train_mean", "observed_mean", "random")
# completion of binary matrices only (lost answers: matrix.metric=exact_match)
BINARY = ("logistic", "lgmf", "lgmf_additive")
PREDICT_METHODS = COMPLETION + BINARY + REPRESENTATION + BASELINES

# rep_dot's encoder (predict/encoder.py) and how its best step is chosen (predict/rep_dot_training.py)
REP_DOT_SELECT = ("dev", "test")


def parse_rep_dot_encoder(text: str) -> tuple[str, int | None]:
    """("frozen" | "full", None) or ("top", K) from predict.rep_dot_encoder; ValueError otherwise."""
    if text in ("frozen", "full"):
        return text, None
    if text.startswith("top:") and text[4:].isdigit() and int(text[4:]) >= 1:
        return "top", int(text[4:])
    raise ValueError(f"rep_dot encoder {text!r}: not one of frozen, full, top:K (K >= 1 layers)")


# replay (replay/strategies.py, replay/baselines.py)
STRATEGY_KINDS = ("none", "random", "predicted", "ground_truth", "online", "gt_mir", "ppl_median", "grad_prod_neg",
                  "forecast")
REPLAY_PROTOCOLS = ("final", "project")  # replay.protocol (replay/protocol.py)


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A replay strategy as configured (the grammar in replay/strategies.py)."""

    name: str  # as configured, e.g. "top:predicted:als"
    kind: str  # one of STRATEGY_KINDS
    method: str | None = None  # completion method of predicted and online
    top: bool = False
    candidates: int | None = None  # gt_mir:N: N

    @property
    def weighted(self) -> bool:
        """Scored examples whose weights softmax(score / T) depend on T (part of the run's fingerprint)."""
        return self.kind in ("predicted", "ground_truth", "online", "grad_prod_neg")


def parse_strategy(name: str) -> Strategy:
    """A strategy from its name; ValueError names what is wrong."""
    top = name.startswith("top:")
    parts = (name[4:] if top else name).split(":")
    kind, method = parts[0], (parts[1] if len(parts) > 1 else None)
    # predicted: any method; online: the methods that use the k entries scored mid-run
    methods = list(COMPLETION + BASELINES + (REPRESENTATION if kind == "predicted" else ()))
    if kind not in STRATEGY_KINDS or len(parts) > 2:
        raise ValueError(f"replay strategy {name!r}: not one of none, random, predicted:METHOD, ground_truth, "
                         "online:METHOD, gt_mir:N, ppl_median, grad_prod_neg, forecast (predicted, ground_truth, "
                         "online and grad_prod_neg optionally prefixed with top:)")
    if kind == "gt_mir":
        if top or method is None or not method.isdigit() or int(method) < 2:
            raise ValueError(f"replay strategy {name!r}: gt_mir needs N >= 2 candidates per draw, e.g. gt_mir:30 "
                             "(it takes no top:)")
        return Strategy(name, kind, None, False, int(method))
    if kind in ("predicted", "online"):
        if method not in methods:
            raise ValueError(f"replay strategy {name!r}: {kind} needs a method, one of {', '.join(methods)}")
    elif method is not None:
        raise ValueError(f"replay strategy {name!r}: {kind} takes no method")
    if top and kind in ("none", "random", "ppl_median", "forecast"):
        raise ValueError(f"replay strategy {name!r}: top: needs sampled scores (predicted, ground_truth, online or "
                         "grad_prod_neg; ppl_median is always its highest scores, forecast draws by the file's "
                         "weights)")
    return Strategy(name, kind, method, top or kind == "ppl_median")
