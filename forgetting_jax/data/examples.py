"""Records to tokenized `Example`s, with the same encoders for training and scoring."""

import json
import logging
from typing import Sequence

from forgetting_jax.data.chat import encode_chat
from forgetting_jax.data.errors import DataError
from forgetting_jax.data.records import Encoded, Example, record_format
from forgetting_jax.data.tokenize import encode_lm
from forgetting_jax.utils.io import write_text

log = logging.getLogger(__name__)


def encode_record(tokenizer, record: dict, max_length: int | None = None) -> Encoded:
    """`encode_lm` of a text record or `encode_chat` of a conversation record."""
    if record_format(record) == "chat":
        return encode_chat(tokenizer, record["messages"], max_length)
    return encode_lm(tokenizer, record["text"], max_length)


def encode_records(tokenizer, records: Sequence[dict], max_length: int | None = None, *,
                   skip_bad: bool = False, skipped_path: str | None = None,
                   source: str | None = None) -> list[Example]:
    """Examples of `records` in order.

    A record that cannot be encoded (a response longer than max_length, a text of one token)
    raises DataError naming it, or with skip_bad is left out, counted in the log and listed in
    `skipped_path` when given. `source` names the data in messages.
    """
    examples, skipped = [], []
    truncated_examples = truncated_tokens = 0
    for record in records:
        try:
            encoded = encode_record(tokenizer, record, max_length)
        except DataError as err:
            err = err.located(source, f"record {record['id']!r}", record["id"])
            if not skip_bad:
                raise err from None
            skipped.append({"id": record["id"], "field": err.field, "reason": err.reason})
            continue
        truncated_examples += encoded.num_truncated > 0
        truncated_tokens += encoded.num_truncated
        examples.append(Example(record["id"], record.get("task", ""), encoded.ids, encoded.mask))
    if truncated_examples:
        log.info("truncated %d of %d examples%s to max_length=%s (%d tokens dropped)", truncated_examples,
                 len(records), f" of {source}" if source else "", max_length, truncated_tokens)
    if skipped:
        if skipped_path:
            write_text(skipped_path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped))
        log.warning("skipped %d of %d records%s that do not fit max_length=%s; list: %s", len(skipped),
                    len(records), f" of {source}" if source else "", max_length, skipped_path or "not written")
    return examples
