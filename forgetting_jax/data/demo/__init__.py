"""The bundled offline demo: an upstream corpus, an instruction task suite and a tokenizer.

Files live in forgetting_jax/resources/ and are rebuilt by the scripts of this package:
  python -m forgetting_jax.data.demo.build_corpus      demo_corpus.jsonl.gz (+ .meta.json, licence)
  python -m forgetting_jax.data.demo.build_tokenizer   demo_tokenizer/
The task suite is generated in memory from a seed (`tasks.build_task_suite`).
"""

import os


def resources_dir() -> str:
    """forgetting_jax/resources/."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "resources")


def corpus_path() -> str:
    return os.path.join(resources_dir(), "demo_corpus.jsonl.gz")


def tokenizer_path() -> str:
    """A Hugging Face tokenizer directory: `AutoTokenizer.from_pretrained(tokenizer_path())`."""
    return os.path.join(resources_dir(), "demo_tokenizer")
