"""`forgetting-jax generate`: greedy completions of a data file's prompts under a model.

  forgetting-jax generate --model=DIR --data=FILE --format=lm|chat --max_new_tokens=N
                          --output=OUT.jsonl [--dtype=float32|bfloat16] [--stop=STR]

OUT.jsonl holds one line {"id": str, "completion": str} per example, in input order: the decoded
new text (special tokens skipped), without the EOS that ended it and cut before the first --stop
string. Decoding is greedy with a KV cache (models/generate.py): prompts sorted by length and
batched, EOS ids from the model config, the tokenizer and generation_config.json. chat: the
conversation without its final assistant message (the reference answer), or the whole of a
conversation that ends with the user's turn (a prompt to answer), rendered with the chat
template and its generation prompt, tokenized without added special tokens (the template writes
BOS); lm: the text, tokenized with the tokenizer's special tokens (as `score` does). Prompts keep
their last --max_length tokens (and at most max_position_embeddings - max_new_tokens). The output
is written atomically: a failed run leaves no file.
"""

import json
import logging

import jax
from absl import flags

from forgetting_jax.commands.common import fail, model_and_data_errors, start_file_command
from forgetting_jax.utils.progress import progress_bar

_MODEL = flags.DEFINE_string("model", None, "Hugging Face model directory (config.json, safetensors, "
                             "tokenizer), or a .gguf file (converted once into a directory beside it; "
                             "pip install 'forgetting_jax[gguf]').")
_DATA = flags.DEFINE_string("data", None, "JSON lines, or any file `datasets` reads (json, jsonl, parquet).")
_FORMAT = flags.DEFINE_enum("format", "lm", ["lm", "chat"], "lm: {id, text}; chat: {id, messages}.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .jsonl path: one {id, completion} line per example.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 128, "New tokens per example, at most.", lower_bound=1)
_MAX_LENGTH = flags.DEFINE_integer("max_length", None, "Prompt tokens kept per example (the last ones); "
                                   "default: all that fit the model's positions.", lower_bound=1)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and compute dtype.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer directory, when not the model directory.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Prompts per compiled call.", lower_bound=1)
_STOP = flags.DEFINE_multi_string("stop", [], "A string that ends a completion (cut from it).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip bad records (listed in a sidecar file) instead of failing.")

REQUIRED = ("model", "data", "output")  # listed as required by --help

log = logging.getLogger("forgetting_jax.generate")


def main(argv):
    start_file_command("generate", argv, REQUIRED, _OUTPUT.value, ".jsonl")
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.data.prompts import prompt_text
    from forgetting_jax.data.readers import read_records
    from forgetting_jax.models.generate import (Generator, decode_completions, encode_prompts, eos_token_ids,
                                                stop_token_sequences)
    from forgetting_jax.models.loading import load_model, load_tokenizer
    from forgetting_jax.score.scorer import data_mesh
    from forgetting_jax.utils.io import write_text
    from forgetting_jax.utils.runtime import is_main

    try:
        records = read_records(_DATA.value, _FORMAT.value, skip_bad=_SKIP_BAD.value, prompts=True)
        if not records:
            raise DataError("no records to generate from", path=_DATA.value)
        tokenizer = load_tokenizer(_TOKENIZER.value or _MODEL.value)
        texts = []
        for record in records:
            try:
                texts.append(prompt_text(tokenizer, record))
            except DataError as err:
                raise err.located(_DATA.value, f"record {record['id']!r}", record["id"]) from None
        prompts = encode_prompts(tokenizer, texts, add_special_tokens=_FORMAT.value == "lm",
                                 max_prompt_tokens=_MAX_LENGTH.value)
        config, params = load_model(_MODEL.value, param_dtype=_DTYPE.value, dtype=_DTYPE.value)
    except model_and_data_errors() as err:
        fail("generate", str(err))
    ids = [r["id"] for r in records]
    empty = [i for i, p in zip(ids, prompts) if len(p) == 0]
    if empty:
        fail("generate", f"{_DATA.value}: record {empty[0]!r}: the prompt has no tokens")
    out_of_vocab = [i for i, p in zip(ids, prompts) if int(p.max()) >= config.vocab_size]
    if out_of_vocab:
        fail("generate", f"{_DATA.value}: record {out_of_vocab[0]!r}: token ids exceed the model's vocabulary "
                         f"({config.vocab_size}); is --tokenizer the model's tokenizer?")
    room = config.max_position_embeddings - _MAX_NEW_TOKENS.value
    if room < 1:
        fail("generate", f"--max_new_tokens={_MAX_NEW_TOKENS.value} leaves no room for a prompt in the model's "
                         f"{config.max_position_embeddings} positions", 2)
    cut = sum(len(p) > room for p in prompts)
    if cut:
        log.info("%d prompts keep their last %d tokens (max_position_embeddings %d - max_new_tokens %d)", cut,
                 room, config.max_position_embeddings, _MAX_NEW_TOKENS.value)
    eos = eos_token_ids(config, tokenizer, _MODEL.value)
    stops = list(_STOP.value)

    log.info("generating up to %d tokens for %d prompts (%d tokens) with a %s model of %.1fM parameters in %s; "
             "EOS ids %s", _MAX_NEW_TOKENS.value, len(prompts), sum(len(p) for p in prompts), config.family,
             config.num_params / 1e6, _DTYPE.value, eos or "none")
    bar = progress_bar(len(prompts), "ex", "generating")

    def progress(stats):
        bar.update(stats.examples - bar.n)
        bar.set_postfix(new_tok_s=f"{stats.tokens_per_second:,.0f}")

    # Rows split over the accelerators of this process; one device on CPUs. A multi-process run
    # decodes every prompt in each process (the Generator's mesh is single-process); process 0 writes.
    mesh = data_mesh(jax.local_devices()) if jax.default_backend() != "cpu" else None
    generator = Generator(config, params, mesh=mesh)
    new_ids, stats = generator.generate(prompts, _MAX_NEW_TOKENS.value, eos_token_ids=eos,
                                        stop_token_sequences=stop_token_sequences(tokenizer, stops),
                                        batch_size=_BATCH_SIZE.value, progress=progress)
    bar.close()
    completions = decode_completions(tokenizer, new_ids, stops)
    if is_main():
        write_text(_OUTPUT.value, "".join(json.dumps({"id": i, "completion": c}, ensure_ascii=False) + "\n"
                                          for i, c in zip(ids, completions)))
    log.info("wrote %s: %d examples, %d new tokens (%d prompt tokens), %.0f new tokens/s, %d batches, %.1fs",
             _OUTPUT.value, stats.examples, stats.new_tokens, stats.prompt_tokens, stats.tokens_per_second,
             stats.batches, stats.seconds)
