"""`forgetting-jax inspect`: records, tasks, id uniqueness and one example of a data file, as read."""

import json
import os
import sys

import pytest
from absl import logging as absl_logging

from forgetting_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "data")
TOKENIZER = os.path.join(ROOT, "forgetting_jax", "resources", "demo_tokenizer")


def setup_module():
    # absl's handler holds the stderr of when absl was imported (pytest's capture); see test_commands_train.
    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


def fixture(name):
    return os.path.join(FIXTURES, name)


def inspect(capsys, *args):
    try:
        cli.run(["forgetting-jax", "inspect", *args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(capsys, *args):
    code, out, err = inspect(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one JSON object: logs are on stderr


def test_text_report_of_a_flan_file(capsys):
    code, out, _ = inspect(capsys, "--source=flan", f"--data={fixture('flan.jsonl')}")
    assert code == 0
    assert "3 records, 2 task(s), ids unique" in out
    assert "anli_r1" in out and "wmt16_translate" in out
    assert "[user]" in out and "Premise: it rains." in out and "[assistant] (response)" in out and "yes" in out


def test_json_of_a_flan_file(capsys):
    result = inspect_json(capsys, "--source=flan", f"--data={fixture('flan.jsonl')}")
    assert result["source"] == "flan" and result["path"] == fixture("flan.jsonl")
    assert result["records"] == 3 and result["tasks"] == {"anli_r1": 2, "wmt16_translate": 1}
    assert result["ids_unique"] is True
    example = result["example"]
    assert example["format"] == "chat" and example["response"] == "yes"
    assert example["prompt"] == [{"role": "user", "content": "Premise: it rains. Hypothesis: it is wet. Entailed?"}]
    assert "tokens" not in example


def test_mmlu_with_dev_shots_and_tokens(capsys):
    result = inspect_json(capsys, "--source=mmlu", f"--data={fixture('mmlu_test.jsonl')}",
                          f"--dev_data={fixture('mmlu_dev.jsonl')}", f"--model={TOKENIZER}", "--example=1")
    assert result["records"] == 2 and set(result["tasks"]) == {"chemistry", "elementary_mathematics"}
    example = result["example"]
    assert example["index"] == 1 and example["task"] == "chemistry" and example["response"] == "B"
    assert "H2O is" in example["prompt"][0]["content"]  # the chemistry dev question, as a shot
    tokens = example["tokens"]
    assert tokens["num_tokens"] == len(tokens["ids"]) == len(tokens["scored"])
    assert tokens["num_scored"] == sum(tokens["scored"]) >= 1 and tokens["truncated"] is False
    assert tokens["scored_text"].startswith("B")  # only the response (and its EOS) is scored
    assert "H2O is" in tokens["context_text"]

    without_dev = inspect_json(capsys, "--source=mmlu", f"--data={fixture('mmlu_test.jsonl')}")
    assert "Answer: " not in without_dev["example"]["prompt"][0]["content"]  # no shots


def test_lm_records_and_truncation(capsys):
    from forgetting_jax.data.examples import encode_record
    from forgetting_jax.models.loading import load_tokenizer

    result = inspect_json(capsys, "--source=lm", f"--data={fixture('lm.jsonl')}", f"--model={TOKENIZER}",
                          "--max_length=4")
    example = result["example"]
    assert example["format"] == "lm" and example["text"] == "The quick brown fox jumps over the lazy dog."
    encoded = encode_record(load_tokenizer(TOKENIZER), {"id": "x", "text": example["text"]})
    tokens = example["tokens"]
    assert tokens["ids"] == [int(i) for i in encoded.ids[:4]]
    assert tokens["truncated"] and tokens["num_truncated"] == len(encoded.ids) - 4 and tokens["num_scored"] == 3

    code, out, _ = inspect(capsys, "--source=lm", f"--data={fixture('lm.jsonl')}", f"--model={TOKENIZER}",
                           "--max_length=4")
    assert code == 0 and "4 tokens, 3 scored; truncated" in out


def test_upstream_is_chunked_with_a_model(capsys):
    plain = inspect_json(capsys, "--source=upstream", f"--data={fixture('upstream.jsonl')}")
    chunked = inspect_json(capsys, "--source=upstream", f"--data={fixture('upstream.jsonl')}",
                           f"--model={TOKENIZER}", "--max_length=16")
    assert chunked["records"] > plain["records"]
    assert chunked["example"]["tokens"]["num_tokens"] <= 16 and not chunked["example"]["tokens"]["truncated"]


def test_chat_file(capsys):
    result = inspect_json(capsys, "--source=chat", f"--data={fixture('chat.jsonl')}", "--example=2")
    assert result["records"] == 3 and result["ids_unique"]
    assert result["example"]["id"] == "c3" and result["example"]["response"] == "cba"
    assert [m["role"] for m in result["example"]["prompt"]] == ["user", "assistant", "user"]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("lines, args, message", [
    (None, ["--source=lm"], "no such file"),
    (['{"id": "a", "text": "hi there"}', '{"id": "b"'], ["--source=lm"], "line 2"),
    (['{"id": "a", "text": "hi there"}', '{"id": "b", "txt": "x"}'], ["--source=lm"], "line 2, field 'text'"),
    (['{"id": "a", "text": "hi there"}'], ["--source=nope"], "--source=nope: unknown kind"),
    (['{"inputs": "q", "task": "t"}'], ["--source=flan"], "field 'targets'"),
    (['{"id": "a", "text": "hi there"}'], ["--source=lm", "--example=3"], "has 1 records"),
    (['{"id": "a", "text": "hi"}', '{"id": "a", "text": "ho"}'], ["--source=lm"], "duplicate id 'a'"),
])
def test_bad_input_fails_with_one_line(capsys, tmp_path, lines, args, message):
    path = str(tmp_path / "missing.jsonl") if lines is None else write(tmp_path / "d.jsonl", lines)
    code, out, err = inspect(capsys, *args, f"--data={path}", "--json")
    assert code != 0 and out == ""
    error = [line for line in err.splitlines() if line.startswith("forgetting-jax inspect: error:")]
    assert len(error) == 1 and message in error[0], err
    if lines is not None and "--source=nope" not in args and "--example=3" not in args:
        assert path in error[0]


PUBLISHED = os.path.join(ROOT, "tests", "fixtures", "published")

# (kind, file, extra flags) -> (records, {task: count}, id of the first record): each published
# layout, as downloaded, read through `inspect` (tests/fixtures/published/make_published.py).
PUBLISHED_LAYOUTS = [
    ("upstream", "pile/00.jsonl.zst", (), 3, {"Pile-CC": 1, "PubMed Abstracts": 1, "StackExchange": 1}, "00:1:0"),
    ("upstream", "dolma/v1_6-sample-0000.json.gz", (), 3, {"c4": 2, "wiki": 1}, "c4/0:0"),
    ("tulu", "tulu/tulu_v2_sft_mixture.jsonl", (), 3, {"flan_v2": 1, "oasst1": 1, "science": 1}, "flan_v2_0"),
    ("dolly", "dolly/databricks-dolly-15k.jsonl", (), 2, {"classification": 1, "closed_qa": 1}, "closed_qa:0"),
    ("flan", "flan/by_task/anli_r1_train.json", (), 2, {"anli_r1": 2}, "anli_r1:0"),
    ("flan", "flan/flan2022/flan_zsopt_train.jsonl", (), 2,
     {"anli/r1:0.2.0": 1, "imdb_reviews/plain_text:1.0.0": 1}, "anli/r1:0.2.0:0"),
    ("flan", "flan/muennighoff/train.jsonl", (), 2, {"imdb_reviews": 1, "wmt16_translate": 1}, "wmt16_translate:0"),
    ("mmlu", "mmlu/data/test/anatomy_test.csv", ("--dev_data={p}/mmlu/data/dev/anatomy_dev.csv",), 1,
     {"anatomy": 1}, "anatomy:0"),
    ("mmlu", "mmlu/cais/all/test-00000-of-00001.parquet", ("--dev_data={p}/mmlu/cais/all/dev-00000-of-00001.parquet",),
     2, {"abstract_algebra": 1, "anatomy": 1}, "abstract_algebra:0"),
    ("bbh", "bbh/original/boolean_expressions.json", (), 2, {"boolean_expressions": 2}, "boolean_expressions:0"),
    ("bbh", "bbh/hub/date_understanding/test/0000.parquet", (), 1, {"date_understanding": 1}, "date_understanding:0"),
    ("bbh", "bbh/hub/sports_understanding/test-00000-of-00001.parquet", (), 1, {"sports_understanding": 1},
     "sports_understanding:0"),
    ("truthfulqa", "truthfulqa/TruthfulQA.csv", (), 2, {"Misconceptions": 1, "Misconceptions: Topical": 1},
     "Misconceptions:0"),
    ("truthfulqa", "truthfulqa/generation/validation-00000-of-00001.parquet", (), 2, {"Law": 1, "Misconceptions": 1},
     "Misconceptions:0"),
]


@pytest.mark.parametrize("kind,name,extra,records,tasks,first_id", PUBLISHED_LAYOUTS,
                         ids=[f"{k}:{n}" for k, n, *_ in PUBLISHED_LAYOUTS])
def test_published_layouts_through_inspect(capsys, kind, name, extra, records, tasks, first_id):
    flags = [f"--source={kind}", f"--data={os.path.join(PUBLISHED, name)}"] + [e.format(p=PUBLISHED) for e in extra]
    result = inspect_json(capsys, *flags)
    assert (result["records"], result["tasks"], result["ids_unique"]) == (records, tasks, True)
    assert result["example"]["id"] == first_id


def test_published_multiple_choice_truthfulqa_is_refused_with_a_reason(capsys):
    code, out, err = inspect(capsys, "--source=truthfulqa",
                             f"--data={PUBLISHED}/truthfulqa/multiple_choice/validation-00000-of-00001.parquet")
    assert code != 0 and out == ""
    assert "generation" in err and "Traceback" not in err
