"""The matrix file keeps each upstream example's first characters (matrix/example_texts.py), and
the report names the most forgotten examples by them."""

import os

import numpy as np

from forgetting_jax.analysis.matrix_file import read_matrix_file
from forgetting_jax.matrix.example_texts import example_texts, snippet


class Words:
    """A tokenizer stand-in: token i is the word words[i]; 0 is a special token."""

    words = ["<s>", "the", "cat", "sat", "on|a", "mat"]

    def batch_decode(self, batch, skip_special_tokens=False):
        return [" ".join(self.words[i] for i in ids if not (skip_special_tokens and i == 0)) for ids in batch]


def test_texts_are_the_decoded_beginning_without_special_tokens():
    texts = example_texts(Words(), [np.array([0, 1, 2, 3]), np.array([5, 4, 1, 5])], tokens=3, chars=9)
    assert texts.tolist() == ["the cat", "mat on|a"]
    assert snippet("mat on|a the\ncat", chars=10) == "mat on\\|a…"
    assert snippet("short") == "short"


def test_the_matrix_file_holds_every_examples_text_and_the_report_shows_them(micro_matrix):
    from forgetting_jax.matrix.upstream import load_upstream_records
    from forgetting_jax.train.base import tokenizer as cached_tokenizer
    from micro_demo import micro_experiment

    workdir, summary = micro_matrix
    data = read_matrix_file(summary.matrix_path)
    texts = data["example_texts"]
    assert len(texts) == len(data["example_ids"]) == 50 and all(texts)
    config = micro_experiment()
    base_dir = [d for d in os.listdir(os.path.join(workdir, "base"))][0]
    tokenizer = cached_tokenizer(os.path.join(workdir, "base", base_dir, "model"))
    records = load_upstream_records(config.matrix, tokenizer)
    by_id = {r["id"]: " ".join(r["text"].split()) for r in records}
    starts = [by_id[i].startswith(t[:40]) for i, t in zip(data["example_ids"], texts)]
    assert np.mean(starts) > 0.9  # the decoded beginning is the text's beginning
    with open(os.path.join(summary.experiment_dir, "report.md"), encoding="utf-8") as f:
        report = f.read()
    top = report.split("## Upstream examples forgotten the most", 1)[1].split("\n## ", 1)[0]
    assert "| example | source | text | mean Z |" in top
    assert sum(snippet(t) in top for t in texts) == 10
