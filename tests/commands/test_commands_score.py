"""`forgetting-jax score` follows the design contract: transformers' numbers, input order, clear errors."""

import os

import numpy as np
import pytest

from command_line import run_cli, write_jsonl
from tiny_hf import hf_mean_nll

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Forgetting.", "def add(a, b):\n    return a + b",
         "What is 12 plus 30? 42. " * 5, "Low-rank structure predicts which examples are forgotten."]


def test_lm_scores_match_transformers_in_input_order(model_dir, tmp_path):
    path, model, tokenizer = model_dir
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"x{i}", "text": t} for i, t in enumerate(TEXTS)])
    out = str(tmp_path / "o.npz")
    assert run_cli("score", f"--model={path}", f"--data={data}", "--format=lm", f"--output={out}") == 0
    result = np.load(out)
    assert list(result["example_id"]) == [f"x{i}" for i in range(len(TEXTS))]
    assert result["nll"].dtype == np.float32 and result["num_tokens"].dtype == np.int32
    for i, text in enumerate(TEXTS):
        ids = tokenizer(text)["input_ids"]
        mask = np.ones(len(ids), bool)
        assert result["num_tokens"][i] == len(ids) - 1
        np.testing.assert_allclose(result["nll"][i], hf_mean_nll(model, ids, mask), rtol=1e-4, atol=1e-4)


def test_lm_truncation_keeps_first_tokens(model_dir, tmp_path):
    path, model, tokenizer = model_dir
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "long", "text": TEXTS[3]}])
    out = str(tmp_path / "o.npz")
    assert run_cli("score", f"--model={path}", f"--data={data}", f"--output={out}", "--max_length=9") == 0
    ids = tokenizer(TEXTS[3])["input_ids"][:9]
    result = np.load(out)
    assert result["num_tokens"][0] == 8
    np.testing.assert_allclose(result["nll"][0], hf_mean_nll(model, ids, np.ones(9, bool)), rtol=1e-4)


def test_chat_scores_only_the_final_assistant_message(model_dir, tmp_path):
    from forgetting_jax.data.chat import encode_chat

    path, model, tokenizer = model_dir
    messages = [{"role": "user", "content": "What is 12 plus 30?"}, {"role": "assistant", "content": "42."},
                {"role": "user", "content": "And the fox?"}, {"role": "assistant", "content": "It jumps."}]
    data = write_jsonl(tmp_path / "c.jsonl", [{"id": "c0", "messages": messages}])
    out = str(tmp_path / "o.npz")
    assert run_cli("score", f"--model={path}", f"--data={data}", "--format=chat", f"--output={out}") == 0
    encoded = encode_chat(tokenizer, messages, 1024)
    response = tokenizer.decode(encoded.ids[encoded.mask])
    assert "It jumps." in response and "42" not in response
    result = np.load(out)
    assert result["num_tokens"][0] == encoded.mask.sum()
    np.testing.assert_allclose(result["nll"][0], hf_mean_nll(model, list(encoded.ids), encoded.mask), rtol=1e-4)


@pytest.mark.parametrize("lines, expected", [
    (['{"id": "a", "text": "fine"}', '{"id": "b", "text": '], ["line 2"]),
    (['{"id": "a", "text": "fine"}', '{"id": "b"}'], ["line 2", "text"]),
    (['{"id": "a", "text": "fine"}', '{"id": "b", "text": 7}'], ["line 2", "text"]),
    (['{"id": "a", "text": "fine"}', '{"id": "a", "text": "again"}'], ["line 2", "id"]),
    ([], ["empty"]),
])
def test_bad_input_names_file_line_and_field_and_writes_nothing(model_dir, tmp_path, capsys, lines, expected):
    path, _, _ = model_dir
    data = write_jsonl(tmp_path / "bad.jsonl", lines)
    out = str(tmp_path / "o.npz")
    assert run_cli("score", f"--model={path}", f"--data={data}", f"--output={out}") != 0
    err = capsys.readouterr().err
    assert "bad.jsonl" in err
    for word in expected:
        assert word in err.lower() or word in err
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "fine text"}])
    assert run_cli("score", f"--model={tmp_path / 'nope'}", f"--data={data}", f"--output={tmp_path / 'o.npz'}") != 0
    assert "nope" in capsys.readouterr().err
