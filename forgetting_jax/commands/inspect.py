"""`forgetting-jax inspect`: what a data file holds, read the way the project reads it.

  forgetting-jax inspect --source=KIND --data=FILE [--dev_data=FILE] [--model=DIR] [--json]

KIND is a source reader of data/sources.py (upstream, tulu, dolly, flan, mmlu, bbh, truthfulqa) or a
scoring format of `forgetting-jax score` (lm: {id, text}; chat: {id, messages}). Prints the number of
records, the tasks with their counts, whether the ids are unique, and one example as it will be
trained or scored: the messages of a conversation (the last assistant message is the response, the
only part trained and scored) or the text of a language-model record. With --model (a Hugging Face
directory with a tokenizer), also the example's tokens as the project's encoders make them, which
of them are scored, and what --max_length cuts; upstream text is then cut into max_length chunks as
the matrix pipeline cuts it. MMLU prompts get 5 shots from --dev_data (none without it).

With --json, stdout is one JSON object: {"source", "path", "records", "tasks": {task: count},
"ids_unique", "example"}; logs go to stderr. A bad file fails with one line naming the file, the
line and the field.
"""

import json
import logging
import sys
from collections import Counter

from absl import flags

from forgetting_jax.commands.common import check_args, fail, setup_logging
from forgetting_jax.data.readers import FORMATS

_SOURCE = flags.DEFINE_string("source", None, "How to read --data: a source reader (upstream, tulu, dolly, flan, "
                              "mmlu, bbh, truthfulqa) or a scoring format (lm, chat).")
_DATA = flags.DEFINE_string("data", None, "The data file (.jsonl, .json, .csv, .tsv, each optionally .gz or .zst; "
                            ".parquet, .arrow) or a `datasets` name.")
_DEV_DATA = flags.DEFINE_string("dev_data", None, "MMLU: the dev split the 5-shot prompts are taken from "
                                "(without it, prompts have no shots).")
_MODEL = flags.DEFINE_string("model", None, "Hugging Face model directory (or .gguf file) whose tokenizer encodes the "
                             "example.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer directory, when not the model directory.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 1024, "Tokens kept per example (data.max_length, "
                                   "matrix.max_length).", lower_bound=2)
_EXAMPLE = flags.DEFINE_integer("example", 0, "Which record to show (0-based, in file order).", lower_bound=0)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object on stdout instead of the text report.")

REQUIRED = ("source", "data")  # listed as required by --help

log = logging.getLogger("forgetting_jax.inspect")


def _read(kind: str, path: str, tokenizer, max_length: int) -> list[dict]:
    from forgetting_jax.data.readers import read_records
    from forgetting_jax.data.sources import READERS

    if kind in FORMATS:
        return read_records(path, kind)
    if kind == "mmlu":
        return READERS[kind](path, dev_path=_DEV_DATA.value, k=5 if _DEV_DATA.value else 0)
    if kind == "upstream" and tokenizer is not None:
        return READERS[kind](path, tokenizer=tokenizer, max_length=max_length)
    return READERS[kind](path)


def _example(record: dict, index: int) -> dict:
    example = {"index": index, "id": record["id"], "task": record.get("task", "")}
    if "messages" in record:
        messages = list(record["messages"])
        example.update(format="chat", messages=messages, prompt=messages[:-1], response=messages[-1]["content"])
    else:
        example.update(format="lm", text=record["text"])
    return example


def _tokens(tokenizer, record: dict, max_length: int, model: str) -> dict:
    """The example as the encoders make it (data/examples.py), or why it cannot be encoded."""
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.data.examples import encode_record

    out = {"tokenizer": model, "max_length": max_length}
    try:
        encoded = encode_record(tokenizer, record, max_length)
    except DataError as err:
        return dict(out, error=err.reason if err.field is None else f"field {err.field!r}: {err.reason}")
    ids = [int(i) for i in encoded.ids]
    mask = [bool(m) for m in encoded.mask]
    scored = [i for i, m in zip(ids, mask) if m]
    context = [i for i, m in zip(ids, mask) if not m]
    return dict(out, num_tokens=len(ids), num_scored=len(scored), num_truncated=int(encoded.num_truncated),
                truncated=encoded.num_truncated > 0,
                kept="first" if "text" in record else "last",
                ids=ids, scored=mask,
                context_text=tokenizer.decode(context, skip_special_tokens=False),
                scored_text=tokenizer.decode(scored, skip_special_tokens=False))


def _indent(text: str, prefix: str = "    ", limit: int = 2000) -> str:
    if len(text) > limit:
        text = text[:limit] + f" ... [{len(text) - limit} more characters]"
    return "\n".join(prefix + line for line in (text.splitlines() or [""]))


def _report(result: dict) -> str:
    tasks = result["tasks"]
    lines = [f"{result['path']} read as {result['source']}: {result['records']} records, {len(tasks)} task(s), "
             + ("ids unique" if result["ids_unique"] else f"ids NOT unique ({len(result['duplicate_ids'])} "
                f"repeated, e.g. {result['duplicate_ids'][0]!r})")]
    if tasks:
        width = max(len(t) for t in list(tasks)[:40])
        lines.append("tasks (records):")
        for task, count in list(tasks.items())[:40]:
            lines.append(f"  {task or '(no task label)':<{width}}  {count}")
        if len(tasks) > 40:
            lines.append(f"  ... and {len(tasks) - 40} more tasks (--json lists all)")
    example = result["example"]
    if example is None:
        return "\n".join(lines)
    lines.append("")
    lines.append(f"example {example['index']}: id {example['id']!r}, task {example['task']!r}, {example['format']} "
                 + ("(the last assistant message is the response: the only tokens trained and scored)"
                    if example["format"] == "chat" else "(every token after the first is trained and scored)"))
    if example["format"] == "chat":
        for message in example["prompt"]:
            lines += [f"  [{message['role']}]", _indent(message["content"])]
        lines += [f"  [{example['messages'][-1]['role']}] (response)", _indent(example["response"])]
    else:
        lines += ["  [text]", _indent(example["text"])]
    tokens = example.get("tokens")
    if tokens is not None:
        lines.append("")
        if "error" in tokens:
            lines.append(f"tokens ({tokens['tokenizer']}, max_length {tokens['max_length']}): cannot be encoded: "
                         f"{tokens['error']}")
        else:
            cut = (f"truncated: {tokens['num_truncated']} tokens dropped, the {tokens['kept']} "
                   f"{tokens['max_length']} kept" if tokens["truncated"] else "not truncated")
            lines.append(f"tokens ({tokens['tokenizer']}, max_length {tokens['max_length']}): {tokens['num_tokens']} "
                         f"tokens, {tokens['num_scored']} scored; {cut}")
            lines += ["  [context, not scored]", _indent(tokens["context_text"]),
                      "  [scored]", _indent(tokens["scored_text"])]
            marked = [f"{i}*" if m else str(i) for i, m in zip(tokens["ids"], tokens["scored"])]
            if len(marked) > 64:
                marked = marked[:24] + [f"... ({len(marked) - 48} more) ..."] + marked[-24:]
            lines.append("  ids: " + " ".join(marked) + "   (* scored)")
    return "\n".join(lines)


def main(argv):
    from forgetting_jax.data.sources import READERS

    check_args("inspect", argv, REQUIRED)
    kinds = list(READERS) + list(FORMATS)
    if _SOURCE.value not in kinds:
        fail("inspect", f"--source={_SOURCE.value}: unknown kind; expected one of {', '.join(kinds)}", 2)
    if _DEV_DATA.value and _SOURCE.value != "mmlu":
        fail("inspect", f"--dev_data is read only with --source=mmlu (not {_SOURCE.value})", 2)
    setup_logging()
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.models.hf_checkpoint import CheckpointError
    from forgetting_jax.models.loading import load_tokenizer

    path = _DATA.value
    tokenizer = None
    tokenizer_dir = _TOKENIZER.value or _MODEL.value
    try:
        if tokenizer_dir:
            tokenizer = load_tokenizer(tokenizer_dir)
        records = _read(_SOURCE.value, path, tokenizer, _MAX_LENGTH.value)
    except CheckpointError as err:
        fail("inspect", " ".join(str(err).split()))  # one line, whatever transformers said
    except (DataError, FileNotFoundError, ValueError) as err:
        fail("inspect", str(err))
    if records and _EXAMPLE.value >= len(records):
        fail("inspect", f"--example={_EXAMPLE.value}: {path} has {len(records)} records", 2)
    tasks = Counter(r.get("task", "") for r in records)
    ids = Counter(r["id"] for r in records)
    duplicates = [i for i, n in ids.items() if n > 1]
    example = None
    if records:
        record = records[_EXAMPLE.value]
        example = _example(record, _EXAMPLE.value)
        if tokenizer is not None:
            example["tokens"] = _tokens(tokenizer, record, _MAX_LENGTH.value, tokenizer_dir)
    result = {"source": _SOURCE.value, "path": path, "records": len(records),
              "tasks": dict(sorted(tasks.items(), key=lambda kv: (-kv[1], kv[0]))),
              "ids_unique": not duplicates, "example": example}
    if duplicates:
        result["duplicate_ids"] = duplicates[:20]
    if _JSON.value:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        print(_report(result))
    sys.stdout.flush()
