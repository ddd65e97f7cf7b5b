"""`forgetting-jax score`: per-example mean NLL of a data file under a model.

  forgetting-jax score --model=DIR --data=FILE --format=lm|chat --output=OUT.npz
                       [--max_length=N] [--dtype=float32|bfloat16]

OUT.npz holds example_id (str [N]), nll (float32 [N], mean NLL per scored token) and num_tokens
(int32 [N], scored tokens), in input order. lm: every token after the first is scored and the
first max_length tokens are kept; chat: the final assistant message is scored and the last
max_length tokens are kept. The output is written atomically: a failed run leaves no file.
"""

import logging

import jax
import numpy as np
from absl import flags

from forgetting_jax.commands.common import fail, model_and_data_errors, start_file_command
from forgetting_jax.utils.progress import progress_bar

_MODEL = flags.DEFINE_string("model", None, "Hugging Face model directory (config.json, safetensors, "
                             "tokenizer), or a .gguf file (converted once into a directory beside it; "
                             "pip install 'forgetting_jax[gguf]').")
_DATA = flags.DEFINE_string("data", None, "JSON lines, or any file `datasets` reads (json, jsonl, parquet).")
_FORMAT = flags.DEFINE_enum("format", "lm", ["lm", "chat"], "lm: {id, text}; chat: {id, messages}.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .npz path.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 1024, "Tokens kept per example.", lower_bound=2)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and compute dtype.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer directory, when not the model directory.")
_TOKENS_PER_BATCH = flags.DEFINE_integer("tokens_per_batch", 16384, "Token slots per compiled call.", lower_bound=1)
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip bad records (listed in a sidecar file) instead of failing.")

REQUIRED = ("model", "data", "output")  # listed as required by --help

log = logging.getLogger("forgetting_jax.score")


def main(argv):
    start_file_command("score", argv, REQUIRED, _OUTPUT.value, ".npz")
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.readers import read_records
    from forgetting_jax.models.loading import load_model, load_tokenizer
    from forgetting_jax.score.scorer import Scorer, data_mesh
    from forgetting_jax.utils.io import write_npz
    from forgetting_jax.utils.runtime import is_main

    try:
        records = read_records(_DATA.value, _FORMAT.value, skip_bad=_SKIP_BAD.value)
        if not records:
            raise DataError("no records to score", path=_DATA.value)
        tokenizer = load_tokenizer(_TOKENIZER.value or _MODEL.value)
        examples = encode_records(tokenizer, records, _MAX_LENGTH.value, skip_bad=_SKIP_BAD.value,
                                  skipped_path=_DATA.value + ".skipped.jsonl" if _SKIP_BAD.value else None,
                                  source=_DATA.value)
        config, params = load_model(_MODEL.value, param_dtype=_DTYPE.value, dtype=_DTYPE.value)
    except model_and_data_errors() as err:
        fail("score", str(err))
    ids = [e.id for e in examples]
    out_of_vocab = [e.id for e in examples if int(e.ids.max()) >= config.vocab_size]
    if out_of_vocab:
        fail("score", f"{_DATA.value}: record {out_of_vocab[0]!r}: token ids exceed the model's vocabulary "
                      f"({config.vocab_size}); is --tokenizer the model's tokenizer?")

    pairs = [e.pair for e in examples]
    log.info("scoring %d examples (%d tokens) with a %s model of %.1fM parameters in %s", len(pairs),
             sum(len(p[0]) for p in pairs), config.family, config.num_params / 1e6, _DTYPE.value)
    bar = progress_bar(len(pairs), "ex", "scoring")

    def progress(stats):
        bar.update(stats.examples - bar.n)
        bar.set_postfix(tok_s=f"{stats.tokens_per_second:,.0f}", real=f"{stats.real_fraction:.0%}")

    # Rows split over every accelerator (of every process of a multi-host run); one device on CPUs.
    mesh = data_mesh() if jax.default_backend() != "cpu" or jax.process_count() > 1 else None
    nll, num_tokens, stats = Scorer(config, params, mesh=mesh).score(pairs, tokens_per_batch=_TOKENS_PER_BATCH.value,
                                                                  progress=progress)
    bar.close()
    empty = int((num_tokens == 0).sum())
    if empty:
        log.warning("%d examples have no scored token; their nll is NaN", empty)
    if is_main():
        write_npz(_OUTPUT.value, example_id=np.asarray(ids, dtype=str), nll=nll, num_tokens=num_tokens)
    log.info("wrote %s: %d examples, mean nll %.4f; %.0f real tokens/s, %.0f%% of %d x %d slots real, %.1fs",
             _OUTPUT.value, len(ids), float(np.nanmean(nll)), stats.tokens_per_second, 100 * stats.real_fraction,
             stats.shape.rows_per_batch, stats.shape.row_length, stats.seconds)
