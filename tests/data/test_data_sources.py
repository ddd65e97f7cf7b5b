"""The paper's source readers on fixtures of every format, splits and subsamples."""

import json
import os

import pytest

from forgetting_jax.data import sources
from forgetting_jax.data.errors import DataError
from forgetting_jax.data.splits import group_by_task, split_records, subsample

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "data")


def fixture(name):
    return os.path.join(FIXTURES, name)


def turns(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


@pytest.mark.parametrize("name,place", [("upstream.jsonl", "2"), ("upstream.parquet", "1")])
def test_upstream_keeps_ids_and_sources(name, place):
    records = sources.read_upstream(fixture(name))
    assert [r["id"] for r in records] == ["d0:0", f"upstream:{place}:0", "d2:0"]  # line 2 / row 1
    assert [r["task"] for r in records] == ["web", "upstream", "books"]
    assert sources.read_upstream(fixture(name), source="dolma")[1]["task"] == "dolma"


def test_upstream_chunks_fit_and_cover_the_text(demo_tokenizer):
    records = sources.read_upstream(fixture("upstream.jsonl"), tokenizer=demo_tokenizer, max_length=16)
    chunks = [r for r in records if r["id"].startswith("d0:")]
    assert [r["id"] for r in chunks] == [f"d0:{k}" for k in range(len(chunks))] and len(chunks) > 3
    assert "".join(r["text"] for r in chunks) == ("First document. " * 30).rstrip()  # whitespace tail dropped
    assert all(len(demo_tokenizer(r["text"])["input_ids"]) <= 16 for r in chunks)
    assert {r["task"] for r in chunks} == {"web"}


def test_tulu_cuts_after_last_assistant_turn():
    records = sources.read_tulu(fixture("tulu.jsonl"))
    assert [(r["id"], r["task"]) for r in records] == [
        ("flan_v2_0", "flan_v2"), ("oasst1_7", "oasst1"), ("flan_v2_1", "flan_v2")]
    assert turns(records[1]) == [("user", "Hi"), ("assistant", "Hello!"), ("user", "Tell a joke"),
                                 ("assistant", "No.")]


@pytest.mark.parametrize("name", ["dolly.jsonl", "dolly.parquet"])
def test_dolly_one_task_per_category(name):
    records = sources.read_dolly(fixture(name))
    assert [r["id"] for r in records] == ["summarization:0", "brainstorming:1", "open_qa:2"]
    assert turns(records[0]) == [("user", "Context: Cats sleep a lot.\n\nSummarize the text."),
                                 ("assistant", "Cats sleep.")]
    assert turns(records[1])[0] == ("user", "Name a color.")
    other = sources.read_dolly(fixture(name), prompt_style="instruction_first")
    assert turns(other[0])[0] == ("user", "Summarize the text.\n\nCats sleep a lot.")
    assert turns(other[1])[0] == ("user", "Name a color.")


@pytest.mark.parametrize("name", ["flan.jsonl", "flan.parquet"])
def test_flan_by_task(name):
    records = sources.read_flan(fixture(name))
    assert [r["task"] for r in records] == ["anli_r1", "wmt16_translate", "anli_r1"]
    assert turns(records[1]) == [("user", "Translate to German: house"), ("assistant", "Haus")]
    assert list(group_by_task(records)) == ["anli_r1", "wmt16_translate"]


@pytest.mark.parametrize("name", ["mmlu_test.jsonl", "mmlu_test.parquet"])
def test_mmlu_k_shot_from_dev(name):
    records = sources.read_mmlu(fixture(name), dev_path=fixture("mmlu_dev.jsonl"), k=2)
    math, chem = records
    assert math["task"] == "elementary_mathematics" and math["messages"][-1]["content"] == "A"
    prompt = math["messages"][0]["content"]
    assert prompt.startswith("The following are multiple choice questions (with answers) about elementary mathematics.")
    assert "2 + 2 =\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B" in prompt and "Answer: C" in prompt
    assert prompt.endswith("5 - 1 =\nA. 4\nB. 3\nC. 2\nD. 1\nAnswer:")
    assert chem["messages"][-1]["content"] == "B" and prompt.count("Answer:") == 3
    zero_shot = sources.read_mmlu(fixture(name), k=0, dev_path=None)
    assert zero_shot[0]["messages"][0]["content"].count("Answer:") == 1


def test_mmlu_needs_dev_for_shots():
    with pytest.raises(DataError, match="dev_path"):
        sources.read_mmlu(fixture("mmlu_test.jsonl"), k=5)


def test_bbh_original_json_task_from_file_name():
    records = sources.read_bbh(fixture("boolean_expressions.json"))
    assert [r["id"] for r in records] == ["boolean_expressions:0", "boolean_expressions:1"]
    assert turns(records[0]) == [("user", "not ( True ) and ( True ) is"), ("assistant", "False")]


@pytest.mark.parametrize("name", ["truthfulqa.csv", "truthfulqa.parquet"])
def test_truthfulqa_by_category(name):
    records = sources.read_truthfulqa(fixture(name))
    assert [(r["id"], r["task"]) for r in records] == [("Misconceptions:0", "Misconceptions"), ("Law:1", "Law")]
    assert turns(records[1])[1] == ("assistant", "Yes.")


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


@pytest.mark.parametrize("reader,row,field", [
    (sources.read_dolly, {"instruction": "i", "context": "", "response": "r"}, "category"),
    (sources.read_dolly, {"instruction": "i", "context": 3, "response": "r", "category": "c"}, "context"),
    (sources.read_dolly, {"instruction": "i", "context": "", "response": " ", "category": "c"}, "response"),
    (sources.read_flan, {"inputs": "i", "targets": ["t"], "task": "x"}, "targets"),
    (sources.read_tulu, {"dataset": "d", "messages": [{"role": "user", "content": "q"}]}, "messages"),
    (sources.read_truthfulqa, {"question": "q", "category": "c"}, "best_answer"),
    (sources.read_bbh, {"input": "", "target": "t"}, "input"),
    (sources.read_upstream, {"text": "   "}, "text"),
    (sources.read_upstream, {"text": "t", "id": 1.5}, "id"),
])
def test_bad_source_rows(tmp_path, reader, row, field):
    good = {"instruction": "i", "context": "", "response": "r", "category": "c", "inputs": "i",
            "targets": "t", "task": "x", "dataset": "d", "question": "q", "best_answer": "a",
            "input": "i", "target": "t", "text": "t",
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError) as info:
        reader(path)
    assert info.value.where == "line 2" and info.value.field.startswith(field) and path in str(info.value)


def test_mmlu_bad_answer(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 2, "subject": "s"}])
    with pytest.raises(DataError, match="line 1, field 'answer'"):
        sources.read_mmlu(path, k=0)


def test_skipping_never_shifts_row_ids(tmp_path):
    rows = [{"inputs": "a", "targets": "1", "task": "t"}, {"inputs": "", "targets": "2", "task": "t"},
            {"inputs": "c", "targets": "3", "task": "t"}]
    path = write_jsonl(tmp_path / "flan.jsonl", rows)
    records = sources.read_flan(path, skip_bad=True)
    assert [(r["id"], r["messages"][1]["content"]) for r in records] == [("t:0", "1"), ("t:2", "3")]
    assert os.path.exists(path + ".skipped.jsonl")


def test_duplicate_upstream_doc_ids(tmp_path):
    path = write_jsonl(tmp_path / "up.jsonl", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    with pytest.raises(DataError, match="line 2, field 'id': duplicate document id 'x': first at .*up.jsonl line 1"):
        sources.read_upstream(path)


def make_records(n_tasks=3, n=40):
    return [{"id": f"t{t}:{i}", "task": f"t{t}"} for t in range(n_tasks) for i in range(n)]


def test_split_is_seeded_per_task_and_order_free():
    records = make_records()
    split = split_records(records, 0.25, seed=1)
    again = split_records(list(reversed(records)), 0.25, seed=1)
    assert {r["id"] for r in split["validation"]} == {r["id"] for r in again["validation"]}
    assert len(split["validation"]) == 30 and len(split["train"]) == 90
    assert not {r["id"] for r in split["train"]} & {r["id"] for r in split["validation"]}
    assert all(len(v) == 10 for v in group_by_task(split["validation"]).values())
    other = split_records(records, 0.25, seed=2)
    assert {r["id"] for r in other["validation"]} != {r["id"] for r in split["validation"]}
    assert split["train"] == [r for r in records if r in split["train"]]  # input order kept


def test_subsample_is_stable_and_nested():
    records = make_records()
    small, large = subsample(records, 10, seed=3), subsample(records, 50, seed=3)
    assert len(small) == 10 and set(map(id, small)) <= set(map(id, large))
    assert subsample(list(reversed(records)), 10, seed=3) == list(reversed(small))
    per_task = subsample(records, 4, seed=3, per_task=True)
    assert all(len(v) == 4 for v in group_by_task(per_task).values())
    assert subsample(records, None) == records
