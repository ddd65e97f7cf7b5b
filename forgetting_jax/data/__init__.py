"""Data: raw sources -> validated records -> tokenized Examples -> packed fixed-shape batches.

  errors     DataError (file, line, field) and ResponseTooLongError
  rows       raw rows of JSON lines / JSON / parquet / csv files or hub datasets, with their place
  validate   field checks; the convert loop that raises on bad rows or skips them with a report
  readers    the scoring formats `lm` and `chat` (read_records)
  sources    the paper's sources: upstream text, Tulu-v2, Dolly, FLAN, MMLU, BBH, TruthfulQA
  splits     seeded train/validation splits and subsamples keyed by id
  tokenize   lm text -> tokens (encode_lm), token-bounded chunking
  chat       conversations -> tokens with response-only masks (encode_chat)
  examples   records -> Examples
  packing    examples -> fixed-shape packed rows
  pipeline   seeded, resumable, prefetched packed batches for training
  demo/      the bundled offline corpus, tokenizer and task suite
"""
