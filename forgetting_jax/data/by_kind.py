"""Records of a file by its kind: the one map from a config's source kind (`matrix.upstream`,
`data.reader`) to the reader that reads it.

  chat      {id, messages} conversations (data/readers.py)
  lm        language-model text, chunked to `max_length` tokens by the tokenizer (Dolma style)
  upstream, tulu, dolly, flan, mmlu, bbh, truthfulqa
            the source readers of data/sources.py, with their options (`kwargs`)
"""

import inspect
from typing import Any, Sequence

from forgetting_jax.data.readers import read_records
from forgetting_jax.data.sources import READERS, read_upstream

FILE_KINDS = ("lm", "chat") + tuple(READERS)


def read_kind(kind: str, path: str, *, field: str, kwargs: dict | None = None, skip_bad: bool | None = None,
              tokenizer: Any = None, max_length: int | None = None, allowed: Sequence[str] = FILE_KINDS,
              check_kwargs: bool = False) -> list[dict]:
    """The records of `path` read as `kind`, in file order.

    field: the config field that names the kind (in errors); kwargs: the reader's options;
    skip_bad: skip malformed records (counted) instead of failing (None: the reader's default);
    tokenizer, max_length: the chunking of kind lm; allowed: the kinds this field accepts;
    check_kwargs: a ValueError naming the options the reader does not take (else passed as given).
    """
    if kind not in allowed:
        raise ValueError(f"{field} {kind!r} is not one of {', '.join(allowed)}")
    options = dict(kwargs or {})
    if skip_bad is not None:
        options["skip_bad"] = skip_bad
    if kind == "chat":
        return read_records(path, "chat", skip_bad=bool(skip_bad))
    if kind == "lm":
        return read_upstream(path, tokenizer=tokenizer, max_length=max_length, **options)
    reader = READERS[kind]
    if check_kwargs:
        accepted = inspect.signature(reader).parameters
        unused = [k for k in options if k not in accepted]
        if unused:
            raise ValueError(f"{field.rsplit('.', 1)[0]}.upstream_kwargs {', '.join(unused)} do not apply to "
                             f"{field}={kind!r}")
    return reader(path, **options)
