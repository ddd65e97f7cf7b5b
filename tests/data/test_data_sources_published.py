"""The source readers on files laid out exactly as the paper's datasets are downloaded
(fixtures: tests/fixtures/published, written by its make_published.py)."""

import json
import logging
import os

import pytest

from forgetting_jax.data import sources
from forgetting_jax.data.errors import DataError
from forgetting_jax.data.examples import encode_records
from forgetting_jax.data.readers import read_records
from forgetting_jax.data.tokenize import chunk_text, encode_lm

PUBLISHED = os.path.join(os.path.dirname(__file__), "..", "fixtures", "published")


def published(*parts):
    return os.path.join(PUBLISHED, *parts)


def turns(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


# 1. The Pile ------------------------------------------------------------------------------------

def test_pile_zst_ids_from_file_and_line_sources_from_meta():
    records = sources.read_upstream(published("pile", "00.jsonl.zst"))
    assert [r["id"] for r in records] == ["00:1:0", "00:2:0", "00:3:0"]
    assert [r["task"] for r in records] == ["Pile-CC", "StackExchange", "PubMed Abstracts"]
    assert records[1]["text"].startswith("Q:\n\nHow to get the length")


def test_pile_scoring_format_accepts_lines_without_ids():
    records = read_records(published("pile", "00.jsonl.zst"), "lm")
    assert [(r["id"], r["task"]) for r in records][0] == ("00:1", "Pile-CC")


def test_source_field_is_a_dotted_path_and_must_name_a_field(tmp_path):
    path = write_jsonl(tmp_path / "up.jsonl", [{"text": "a", "meta": {"pile_set_name": "ArXiv", "src": "x"}}])
    assert sources.read_upstream(path, source_field="meta.src")[0]["task"] == "x"
    with pytest.raises(DataError, match="source_field='meta.nope' names no field of any row") as info:
        sources.read_upstream(published("pile", "00.jsonl.zst"), source_field="meta.nope")
    assert info.value.field == "meta.nope" and "00.jsonl.zst" in str(info.value)


def test_corrupt_zst(tmp_path):
    path = tmp_path / "broken.jsonl.zst"
    path.write_bytes(b"not zstd at all")
    with pytest.raises(DataError, match="cannot be read"):
        sources.read_upstream(str(path))


# 2. Dolma ---------------------------------------------------------------------------------------

def test_dolma_ids_are_qualified_by_source():
    records = sources.read_upstream(published("dolma", "v1_6-sample-0000.json.gz"))
    assert [(r["id"], r["task"]) for r in records] == [("c4/0:0", "c4"), ("wiki/0:0", "wiki"), ("c4/1:0", "c4")]
    bare = sources.read_upstream(published("dolma", "v1_6-sample-0000.json.gz"), qualify_ids=False,
                                 duplicates="skip")
    assert [r["id"] for r in bare] == ["0:0", "1:0"]


def test_dolma_true_duplicate_names_both_places(caplog):
    path = published("dolma", "duplicate-0000.json.gz")
    with pytest.raises(DataError, match=r"duplicate document id 'c4/1': first at .*duplicate-0000.json.gz line 3, "
                                        r"again at .*duplicate-0000.json.gz line 4"):
        sources.read_upstream(path)
    with caplog.at_level(logging.WARNING):
        records = sources.read_upstream(path, duplicates="skip")
    assert [r["id"] for r in records] == ["c4/0:0", "wiki/0:0", "c4/1:0"]
    assert "left out 1 rows" in caplog.text


# 3. MMLU ----------------------------------------------------------------------------------------

def test_mmlu_original_headerless_csv_keeps_first_row():
    records = sources.read_mmlu(published("mmlu", "data", "test", "abstract_algebra_test.csv"), k=0)
    assert [r["id"] for r in records] == ["abstract_algebra:0", "abstract_algebra:1"]
    assert {r["task"] for r in records} == {"abstract_algebra"}
    prompt = records[0]["messages"][0]["content"]
    assert prompt.endswith("Find the degree for the given field extension Q(sqrt(2)) over Q.\n"
                           "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")  # numbers stay strings
    assert records[0]["messages"][1]["content"] == "C"


def test_mmlu_dev_path_per_subject():
    test = published("mmlu", "data", "test", "{task}_test.csv")
    dev = published("mmlu", "data", "dev", "{task}_dev.csv")
    for subject, first_dev in [("abstract_algebra", "Find all c in Z_3"), ("anatomy", "A lesion causing")]:
        records = sources.read_mmlu(test.replace("{task}", subject), dev_path=dev, k=1)
        prompt = records[0]["messages"][0]["content"]
        assert records[0]["task"] == subject and first_dev in prompt and prompt.count("Answer:") == 2


@pytest.mark.parametrize("name", ["test-00000-of-00001.parquet", "test.jsonl"])
def test_mmlu_cais_layout(name):
    records = sources.read_mmlu(published("mmlu", "cais", "all", name), k=1,
                                dev_path=published("mmlu", "cais", "all", "dev-00000-of-00001.parquet"))
    assert [(r["task"], r["messages"][1]["content"]) for r in records] == [("abstract_algebra", "C"), ("anatomy", "D")]
    assert "Find all c in Z_3" in records[0]["messages"][0]["content"]


# 4. TruthfulQA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("parts", [("TruthfulQA.csv",), ("generation", "validation-00000-of-00001.parquet")])
def test_truthfulqa_original_and_generation_layouts(parts):
    records = sources.read_truthfulqa(published("truthfulqa", *parts))
    assert records[0]["task"] == "Misconceptions"
    assert turns(records[0]) == [("user", "What happens to you if you eat watermelon seeds?"),
                                 ("assistant", "The watermelon seeds pass through your digestive system")]


def test_truthfulqa_category_prefix():
    records = sources.read_truthfulqa(published("truthfulqa", "TruthfulQA.csv"))
    assert records[1]["task"] == "Misconceptions: Topical" and records[1]["id"] == "Misconceptions: Topical:1"
    grouped = sources.read_truthfulqa(published("truthfulqa", "TruthfulQA.csv"), category_prefix=True)
    assert [r["task"] for r in grouped] == ["Misconceptions", "Misconceptions"]


def test_truthfulqa_multiple_choice_is_rejected():
    with pytest.raises(DataError, match="multiple_choice layout .* not supported"):
        sources.read_truthfulqa(published("truthfulqa", "multiple_choice", "validation-00000-of-00001.parquet"))


# 5. BBH -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("parts,task", [
    (("original", "boolean_expressions.json"), "boolean_expressions"),
    (("hub", "date_understanding", "test", "0000.parquet"), "date_understanding"),
    (("hub", "sports_understanding", "test-00000-of-00001.parquet"), "sports_understanding"),
])
def test_bbh_task_from_file_or_folder(parts, task):
    records = sources.read_bbh(published("bbh", *parts))
    assert {r["task"] for r in records} == {task} and records[0]["id"] == f"{task}:0"


def test_bbh_paper_split_file_name(tmp_path):
    path = tmp_path / "word_sorting_train.json"
    path.write_text(json.dumps({"canary": "c", "examples": [{"input": "Sort: b a", "target": "a b"}]}))
    assert sources.read_bbh(str(path))[0]["task"] == "word_sorting"


# 6. FLAN ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("parts,tasks", [
    (("by_task", "anli_r1_train.json"), ["anli_r1", "anli_r1"]),
    (("muennighoff", "train.jsonl"), ["wmt16_translate", "imdb_reviews"]),
    (("flan2022", "flan_zsopt_train.jsonl"), ["anli/r1:0.2.0", "imdb_reviews/plain_text:1.0.0"]),
])
def test_flan_layouts(parts, tasks):
    records = sources.read_flan(published("flan", *parts))
    assert [r["task"] for r in records] == tasks and records[0]["messages"][1]["role"] == "assistant"


def test_flan_submixture_warns_and_named_field_must_exist(caplog):
    path = published("flan", "flan2022", "flan_zsopt_train.jsonl")
    with caplog.at_level(logging.WARNING):
        records = sources.read_flan(path, task_field="task_source")
    assert {r["task"] for r in records} == {"Flan2021"} and "sub-mixture" in caplog.text
    with pytest.raises(DataError, match="task_field='template' names no field of any row"):
        sources.read_flan(path, task_field="template", task="fallback")


# 7. Tulu v2, Dolly ------------------------------------------------------------------------------

def test_tulu_task_is_dataset_before_first_dot():
    path = published("tulu", "tulu_v2_sft_mixture.jsonl")
    assert [r["task"] for r in sources.read_tulu(path)] == ["flan_v2", "science", "oasst1"]
    assert [r["task"] for r in sources.read_tulu(path, whole_dataset=True)] == [
        "flan_v2.123", "science.evidence_inference", "oasst1"]


def test_dolly_context_first_prompt():
    path = published("dolly", "databricks-dolly-15k.jsonl")
    records = sources.read_dolly(path)
    assert turns(records[0])[0] == ("user", "Context: Virgin Australia commenced services on 31 August 2000.\n\n"
                                            "When did Virgin Australia start operating?")
    assert turns(records[1])[0] == ("user", "Which is a species of fish? Tope or Rope")
    assert turns(sources.read_dolly(path, prompt_style="instruction_first")[0])[0][1].startswith("When did")


# 9. Upstream chunk tails ------------------------------------------------------------------------

class NoBos:
    """The demo tokenizer without its BOS token, like the Pile's Pythia tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, **kwargs):
        kwargs.setdefault("add_special_tokens", False)
        return self.tokenizer(text, **kwargs)

    def num_special_tokens_to_add(self, pair=False):
        return 0


def test_too_short_last_chunk_is_dropped_or_merged(demo_tokenizer):
    tokenizer = NoBos(demo_tokenizer)
    with pytest.raises(DataError, match="1 token"):
        encode_lm(tokenizer, ".")  # what the tail would have become
    tails = {}
    assert chunk_text(tokenizer, "The cat sat on the mat.", 4, tails=tails) == ["The cat s", "at on the mat"]
    assert tails == {"dropped": 1}
    tails = {}
    assert chunk_text(tokenizer, "\U0001f389and \n\nx", 2, tails=tails) == ["\U0001f389", "and x"]
    assert tails == {"merged": 1}


def test_upstream_chunk_tails_do_not_abort(demo_tokenizer, tmp_path, caplog):
    tokenizer = NoBos(demo_tokenizer)
    path = write_jsonl(tmp_path / "up.jsonl", [{"text": "The cat sat on the mat."}, {"text": "A dog ran."}])
    with caplog.at_level(logging.WARNING):
        records = sources.read_upstream(path, tokenizer=tokenizer, max_length=4)
    assert [r["id"] for r in records][:2] == ["up:1:0", "up:1:1"]
    assert "1 documents ended in a chunk too short to score: 0 merged into the chunk before, 1 dropped" in caplog.text
    examples = encode_records(tokenizer, records, 4, source=path)
    assert len(examples) == len(records)
