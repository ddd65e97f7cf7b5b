"""The bundled upstream corpus: read it, or load it as chunked language-model examples."""

from forgetting_jax.data.demo import corpus_path, tokenizer_path
from forgetting_jax.data.examples import encode_records
from forgetting_jax.data.records import Example
from forgetting_jax.data.rows import Row, read_rows
from forgetting_jax.data.sources import read_upstream
from forgetting_jax.data.splits import subsample
from forgetting_jax.data.validate import convert_rows, require_str


def read_demo_corpus(path: str | None = None) -> list[dict]:
    """The corpus documents {"id", "text", "source"}, in file order."""
    path = path or corpus_path()

    def convert(row: Row) -> list[dict]:
        return [{key: require_str(row.values, key) for key in ("id", "text", "source")}]

    return convert_rows(read_rows(path), path, convert)


def load_demo_tokenizer():
    """The demo tokenizer (byte-level BPE, 4096 tokens, Tulu chat template), loaded offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path())


def demo_upstream_records(tokenizer, max_length: int, num_examples: int | None = None,
                          seed: int = 0) -> list[dict]:
    """Corpus chunks of at most max_length tokens as lm records {"id": "<doc>:<chunk>",
    "task": source, "text"}; a seeded subsample of num_examples (None: all), in corpus order."""
    records = read_upstream(corpus_path(), tokenizer=tokenizer, max_length=max_length)
    return subsample(records, num_examples, seed)


def load_demo_upstream(tokenizer, max_length: int, num_examples: int | None = None,
                       seed: int = 0) -> list[Example]:
    """`demo_upstream_records` tokenized: Examples whose task is the source label."""
    records = demo_upstream_records(tokenizer, max_length, num_examples, seed)
    return encode_records(tokenizer, records, max_length, source=corpus_path())
