"""The bundled demo data: corpus, tokenizer and task suite build offline and identically twice."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

from forgetting_jax.data.demo import build_corpus, build_tokenizer, corpus_path, resources_dir, tasks, tokenizer_path
from forgetting_jax.data.demo.corpus import demo_upstream_records, load_demo_upstream, read_demo_corpus
from forgetting_jax.data.demo.rng import StableRng
from forgetting_jax.utils.fingerprint import file_fingerprint


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def corpus():
    return read_demo_corpus()


@pytest.fixture(scope="module")
def meta():
    with open(os.path.join(resources_dir(), "demo_corpus.meta.json")) as f:
        return json.load(f)


def test_committed_corpus_matches_its_record(corpus, meta):
    data = read_bytes(corpus_path())
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert len(data) < 3 * 2**20 and meta["chars"] >= 2**20
    assert len(corpus) == meta["records"] and sum(len(r["text"]) for r in corpus) == meta["chars"]
    sources = {r["source"] for r in corpus}
    assert sources == set(meta["sources"]) and 20 <= len(sources) <= 60
    assert len({r["id"] for r in corpus}) == len(corpus)
    licence = read_bytes(os.path.join(resources_dir(), "LICENSE-demo-corpus.txt")).decode()
    assert "PYTHON SOFTWARE FOUNDATION LICENSE" in licence


def test_corpus_builds_identically_twice(tmp_path, corpus, meta):
    families = {"json", "cli", "time"}
    paths = [str(tmp_path / f"c{i}.jsonl.gz") for i in range(2)]
    digests = [build_corpus.write_corpus(build_corpus.build_records(families=families), p) for p in paths]
    assert digests[0] == digests[1] and read_bytes(paths[0]) == read_bytes(paths[1])
    rebuilt = read_demo_corpus(paths[0])
    assert rebuilt and {r["source"] for r in rebuilt} == families
    if meta["python"] == ".".join(map(str, sys.version_info[:3])):  # same stdlib: same text as the snapshot
        assert rebuilt == [r for r in corpus if r["source"] in families]


def test_committed_tokenizer_loads_offline_and_rebuilds_identically(tmp_path, demo_tokenizer, corpus):
    assert 4000 <= len(demo_tokenizer) <= 8192 and demo_tokenizer.pad_token_id == 0
    assert demo_tokenizer("abc")["input_ids"][0] == demo_tokenizer.bos_token_id
    assert demo_tokenizer.eos_token == "<|endoftext|>" and demo_tokenizer.chat_template
    with open(os.path.join(tokenizer_path(), "build.json")) as f:
        info = json.load(f)
    assert info["corpus"] == file_fingerprint(corpus_path())
    texts = [r["text"] for r in corpus]
    for name in ("a", "b"):
        trained = build_tokenizer.train_tokenizer(texts)
        build_tokenizer.save_tokenizer(trained, str(tmp_path / name), {"corpus": info["corpus"], "vocab_size": 4096})
    committed = sorted(os.listdir(tokenizer_path()))
    assert sorted(os.listdir(tmp_path / "a")) == committed
    for file in committed:
        assert read_bytes(tmp_path / "a" / file) == read_bytes(tmp_path / "b" / file), file
    # The same vocabulary and merges as the committed files (their layout may vary across library versions).
    models = [json.loads(read_bytes(os.path.join(d, "tokenizer.json")))["model"]
              for d in (str(tmp_path / "a"), tokenizer_path())]
    assert models[0]["vocab"] == models[1]["vocab"] and models[0]["merges"] == models[1]["merges"]


def test_stable_rng_is_pinned():
    rng = StableRng(0, "x")
    assert [rng.randint(0, 999) for _ in range(5)] == [626, 650, 90, 239, 45]
    assert StableRng(1, "x").randint(0, 10**9) != StableRng(0, "x").randint(0, 10**9)
    assert sorted(StableRng(3).sample(range(10), 10)) == list(range(10))


def test_task_suite_is_varied_seeded_and_split():
    suite = tasks.build_task_suite(0)
    assert len(suite) >= 24 and set(tasks.task_kinds().values()) >= {"arithmetic", "string", "format", "lookup", "corpus"}
    for name, splits in suite.items():
        assert len(splits["train"]) == tasks.NUM_TRAIN and len(splits["validation"]) == tasks.NUM_VALIDATION
        prompts = {split: {r["messages"][0]["content"] for r in records} for split, records in splits.items()}
        assert not prompts["train"] & prompts["validation"], name
        record = splits["train"][0]
        assert record["task"] == name and [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert record["messages"][1]["content"].strip() and len(record["messages"][1]["content"]) < 60
    again = tasks.generate_task("docstring_function", 0)
    assert again == suite["docstring_function"]
    assert tasks.generate_task("add", 1) != suite["add"]
    assert suite["add"]["train"][0]["messages"][1]["content"] == str(eval(
        suite["add"]["train"][0]["messages"][0]["content"].removeprefix("What is ").removesuffix("?")))


def test_task_suite_digest_is_stable():
    """Pins the generated suite so a change in any generator is noticed."""
    suite = tasks.build_task_suite(0)
    digest = hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()
    with open(os.path.join(os.path.dirname(__file__), "demo_task_suite.sha256")) as f:
        assert digest == f.read().strip()


def test_task_examples_train_on_responses_only(demo_tokenizer):
    examples = tasks.load_task_examples("capital", "validation", demo_tokenizer, max_length=64)
    assert len(examples) == tasks.NUM_VALIDATION and examples[0].id == "capital:validation:0"
    record = tasks.build_task_suite(0)["capital"]["validation"][0]
    scored = demo_tokenizer.decode(examples[0].ids[examples[0].mask].tolist())
    assert scored == record["messages"][1]["content"] + "<|endoftext|>"
    with pytest.raises(KeyError):
        tasks.load_task_examples("capital", "test", demo_tokenizer)


def test_write_task_suite(tmp_path):
    from forgetting_jax.data.readers import read_records

    paths = tasks.write_task_suite(str(tmp_path), num_train=5, num_validation=2)
    assert len(paths) == 2 * len(tasks.TASKS)
    records = read_records(str(tmp_path / "roman.train.jsonl"), "chat")
    assert len(records) == 5 and records[0]["id"] == "roman:train:0"


def test_demo_upstream_examples(demo_tokenizer, corpus):
    examples = load_demo_upstream(demo_tokenizer, max_length=128, num_examples=300, seed=1)
    assert len(examples) == 300 and len({e.id for e in examples}) == 300
    assert all(len(e) <= 128 and not e.mask[0] and e.mask[1:].all() for e in examples)
    doc_sources = {r["id"]: r["source"] for r in corpus}
    assert all(e.task == doc_sources[e.id.rsplit(":", 1)[0]] for e in examples)
    assert len({e.task for e in examples}) >= 15
    assert [e.id for e in examples] == [r["id"] for r in demo_upstream_records(demo_tokenizer, 128, 300, 1)]
    np.testing.assert_array_equal(examples[0].ids[:1], [demo_tokenizer.bos_token_id])
