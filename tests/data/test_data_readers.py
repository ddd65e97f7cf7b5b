"""read_records: every scoring format from a fixture, and bad input case by case."""

import json
import logging
import os

import pytest

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.readers import read_records

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "data")
LM_IDS = ["doc-a", "doc-b", "doc-c"]


def fixture(name):
    return os.path.join(FIXTURES, name)


def write_lines(path, lines):
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (json.dumps(line) if not isinstance(line, str) else line).encode())
            f.write(b"\n")
    return str(path)


@pytest.mark.parametrize("name", ["lm.jsonl", "lm_array.json", "lm.parquet"])
def test_lm_formats_agree(name):
    records = read_records(fixture(name), "lm")
    assert [r["id"] for r in records] == LM_IDS
    assert records[2]["text"] == "Résumé: naïve café, 北京."
    assert records[1]["task"] == "math" and records[0]["task"] == ""


@pytest.mark.parametrize("name", ["chat.jsonl", "chat.parquet"])
def test_chat_formats_agree(name):
    records = read_records(fixture(name), "chat")
    assert [r["id"] for r in records] == ["c1", "c2", "c3"]
    assert records[1]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert records[2]["messages"][-1] == {"role": "assistant", "content": "cba"}
    assert len(records[2]["messages"]) == 4


def test_gzipped_json_lines(tmp_path):
    import gzip

    path = tmp_path / "lm.jsonl.gz"
    with open(fixture("lm.jsonl"), "rb") as src, gzip.open(path, "wb") as dst:
        dst.write(src.read())
    assert [r["id"] for r in read_records(str(path), "lm")] == LM_IDS


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match="cannot be read"):
        read_records(str(path), "lm")


def test_blank_lines_and_bom_do_not_shift_lines(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [b'\xef\xbb\xbf{"id": "a", "text": "x y"}', "", {"id": "b", "text": ""}])
    with pytest.raises(DataError, match="line 3, field 'text'"):
        read_records(path, "lm")


LM_CASES = [
    ([{"id": "a", "text": "ok"}, '{"id": "b", "text": "unterminated'], "line 2", None, "malformed JSON"),
    ([{"id": "a"}], "line 1", "text", "is missing"),
    ([{"id": "a", "text": 7}], "line 1", "text", "must be a string, got int"),
    ([{"id": "a", "text": None}], "line 1", "text", "is null"),
    ([{"id": "a", "text": ""}], "line 1", "text", "empty or whitespace"),
    ([{"id": "a", "text": " \n\t "}], "line 1", "text", "empty or whitespace"),
    ([{"id": None, "text": "hello"}], "line 1", "id", "is null"),
    ([{"id": 3, "text": "hello"}], "line 1", "id", "must be a string, got int"),
    ([{"id": "", "text": "hello"}], "line 1", "id", "empty"),
    ([{"id": "a", "text": "x"}, [1, 2]], "line 2", None, "expected a JSON object, got list"),
    ([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}], "line 3", "id",
     "duplicate id 'a' \\(first seen at line 1\\)"),
    ([{"id": "a", "text": "x"}, b'{"id": "b", "text": "caf\xe9"}'], "line 2", None, "invalid UTF-8"),
    ([{"id": "a", "text": "x", "source": 5}], "line 1", "source", "must be a string"),
]


@pytest.mark.parametrize("lines,where,field,reason", LM_CASES)
def test_bad_lm_records_name_file_line_and_field(tmp_path, lines, where, field, reason):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=reason) as info:
        read_records(path, "lm")
    err = info.value
    assert err.path == path and err.where == where and err.field == field
    assert path in str(err) and where in str(err)
    if field:
        assert f"field {field!r}" in str(err)


def test_lm_lines_without_ids_are_named_by_file_and_line(tmp_path):
    path = write_lines(tmp_path / "00.jsonl", [{"text": "a", "meta": {"pile_set_name": "Pile-CC"}}, "",
                                               {"id": "x", "text": "b"}, {"text": "c"}])
    records = read_records(path, "lm")
    assert [(r["id"], r["task"]) for r in records] == [("00:1", "Pile-CC"), ("x", ""), ("00:4", "")]


def test_chat_records_still_need_ids(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataError, match="line 1, field 'id': is missing"):
        read_records(path, "chat")


def chat(*turns):
    return [{"role": role, "content": content} for role, content in turns]


CHAT_CASES = [
    ({"id": "a"}, "messages", "is missing"),
    ({"id": "a", "messages": "hi"}, "messages", "must be a list"),
    ({"id": "a", "messages": []}, "messages", "empty conversation"),
    ({"id": "a", "messages": ["hi"]}, "messages[0]", "must be an object"),
    ({"id": "a", "messages": [{"content": "hi"}]}, "messages[0].role", "is missing"),
    ({"id": "a", "messages": [{"role": "user", "content": 1}]}, "messages[0].content", "must be a string"),
    ({"id": "a", "messages": chat(("user", "hi"))}, "messages", "no assistant turn"),
    ({"id": "a", "messages": chat(("user", "hi"), ("assistant", "yo"), ("user", "?"))}, "messages[2].role",
     "must end with an assistant turn"),
    ({"id": "a", "messages": chat(("user", "hi"), ("assistant", "  "))}, "messages[1].content",
     "response .* empty"),
]


@pytest.mark.parametrize("record,field,reason", CHAT_CASES)
def test_bad_chat_records(tmp_path, record, field, reason):
    good = {"id": "z", "messages": chat(("user", "q"), ("assistant", "a"))}
    path = write_lines(tmp_path / "bad.jsonl", [good, record])
    with pytest.raises(DataError, match=reason) as info:
        read_records(path, "chat")
    assert info.value.where == "line 2" and info.value.field == field


def test_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "   ", "z"]}), path)
    with pytest.raises(DataError, match="row 1, field 'text'"):
        read_records(path, "lm")


@pytest.mark.parametrize("content,reason", [(b"", "is empty"), (b"\n  \n", "holds no records")])
def test_empty_files(tmp_path, content, reason):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason):
        read_records(str(path), "lm")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(str(tmp_path / "nope.jsonl"), "lm")
    with pytest.raises(DataError, match="unknown format"):
        read_records(fixture("lm.jsonl"), "text")


def test_skip_bad_keeps_rows_in_place_and_writes_sidecar(tmp_path, caplog):
    lines = [
        {"id": "a", "text": "one"},
        '{"id": "b", "text": ',
        {"id": "c", "text": ""},
        b'{"id": "d", "text": "\xff"}',
        {"id": "e", "text": "five"},
        {"id": "a", "text": "dup"},
        {"id": "g", "text": 3},
        {"id": "h", "text": "eight"},
    ]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        records = read_records(path, "lm", skip_bad=True)
    assert [(r["id"], r["text"]) for r in records] == [("a", "one"), ("e", "five"), ("h", "eight")]
    assert "skipped 5 of 8 records" in caplog.text
    with open(path + ".skipped.jsonl") as f:
        skipped = [json.loads(line) for line in f]
    assert [s["where"] for s in skipped] == ["line 2", "line 3", "line 4", "line 6", "line 7"]
    assert [s["id"] for s in skipped] == [None, "c", None, "a", "g"]
    assert [s["field"] for s in skipped] == [None, "text", None, "id", "text"]

    custom = str(tmp_path / "out" / "skipped.jsonl")
    read_records(path, "lm", skip_bad=True, skipped_path=custom)
    assert os.path.exists(custom)


def test_skip_bad_with_nothing_left_is_an_error(tmp_path):
    path = write_lines(tmp_path / "all_bad.jsonl", [{"id": "a", "text": ""}])
    with pytest.raises(DataError, match="no usable records"):
        read_records(path, "lm", skip_bad=True)
