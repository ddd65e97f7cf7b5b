"""Readers for the paper's sources: each turns a file (or a hub dataset) into records.

Every reader takes `path` (a local JSON lines / JSON / CSV file, optionally .gz or .zst, a parquet
or arrow file, or a `datasets` hub name with `name` and `split` where a network or cache exists),
validates every row, and returns records
  lm:   {"id", "task", "text"}      (upstream text; "task" is the source label)
  chat: {"id", "task", "messages"}  (prompt turns, then the response as the last assistant turn)
in file order. Task readers take ids from the row's "id" field when it has one, else from the
row's ordinal ("<task>:<row>"), counted over all rows including skipped ones, so skipping a bad
row never shifts another row's id; `read_upstream` documents its own document ids. Bad rows raise
DataError naming the file, the line and the field, or with skip_bad are counted in the log and
listed in a sidecar file (see `validate.convert_rows`).

The readers live in `sources_text` (upstream, tulu, dolly, flan) and `sources_qa` (mmlu, bbh,
truthfulqa); each one's docstring lists the layouts it accepts and how it derives tasks and ids.
"""

from forgetting_jax.data.sources_qa import CHOICE_LETTERS, read_bbh, read_mmlu, read_truthfulqa
from forgetting_jax.data.sources_text import read_dolly, read_flan, read_tulu, read_upstream

__all__ = ["CHOICE_LETTERS", "READERS", "read_bbh", "read_dolly", "read_flan", "read_mmlu",
           "read_truthfulqa", "read_tulu", "read_upstream"]

READERS = {
    "upstream": read_upstream,
    "tulu": read_tulu,
    "dolly": read_dolly,
    "flan": read_flan,
    "mmlu": read_mmlu,
    "bbh": read_bbh,
    "truthfulqa": read_truthfulqa,
}
