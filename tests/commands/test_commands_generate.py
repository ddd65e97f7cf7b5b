"""`forgetting-jax generate` follows the design contract: transformers' greedy completions, one JSON
line per example in input order, clear errors naming the file."""

import json

import pytest
import torch

from forgetting_jax.data.prompts import prompt_text
from test_commands_score import TEXTS, run_cli, write_jsonl

NEW = 10


def hf_completion(model, tokenizer, text, special=False):
    """transformers' greedy completion of a text (or of token ids: a list)."""
    if isinstance(text, list):
        ids = {"input_ids": torch.tensor([text]), "attention_mask": torch.ones(1, len(text), dtype=torch.long)}
    else:
        ids = tokenizer(text, add_special_tokens=special, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=NEW, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("fmt", ["lm", "chat"])
def test_completions_match_transformers_in_input_order(model_dir, tmp_path, fmt):
    path, model, tokenizer = model_dir
    if fmt == "lm":
        records = [{"id": f"x{i}", "text": t} for i, t in enumerate(TEXTS)]
    else:
        records = [{"id": f"c{i}", "messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "42"}]}
                   for i, t in enumerate(TEXTS)]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    out = str(tmp_path / "o.jsonl")
    assert run_cli("generate", f"--model={path}", f"--data={data}", f"--format={fmt}", f"--max_new_tokens={NEW}",
                   f"--output={out}", "--batch_size=4") == 0
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    assert all(set(line) == {"id", "completion"} for line in lines)
    for record, line in zip(records, lines):
        # lm text is tokenized as `score` does (the tokenizer's BOS), a rendered chat as it is
        assert line["completion"] == hf_completion(model, tokenizer, prompt_text(tokenizer, record), fmt == "lm")


def test_prompt_only_conversations_are_answered(model_dir, tmp_path, capsys):
    path, model, tokenizer = model_dir
    turns = [{"role": "user", "content": TEXTS[1]}]
    records = [{"id": "prompt", "messages": turns},
               {"id": "answered", "messages": turns + [{"role": "assistant", "content": "dropped"}]}]
    out = str(tmp_path / "o.jsonl")
    assert run_cli("generate", f"--model={path}", f"--data={write_jsonl(tmp_path / 'd.jsonl', records)}",
                   "--format=chat", f"--max_new_tokens={NEW}", f"--output={out}") == 0
    prompt, answered = (line["completion"] for line in read_jsonl(out))
    assert prompt == answered == hf_completion(model, tokenizer, prompt_text(tokenizer, records[0]))
    empty = write_jsonl(tmp_path / "e.jsonl", [{"id": "e", "messages": [{"role": "user", "content": " "}]}])
    assert run_cli("generate", f"--model={path}", f"--data={empty}", "--format=chat",
                   f"--output={tmp_path / 'e_out.jsonl'}") != 0
    assert "e.jsonl" in (err := capsys.readouterr().err) and "messages[0].content" in err


def test_stop_strings_cut_the_completion(model_dir, tmp_path):
    path, model, tokenizer = model_dir
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": TEXTS[0]}])
    full = hf_completion(model, tokenizer, TEXTS[0], special=True)
    stop = full[2:4]
    out = str(tmp_path / "o.jsonl")
    assert run_cli("generate", f"--model={path}", f"--data={data}", f"--max_new_tokens={NEW}", f"--output={out}",
                   f"--stop={stop}") == 0
    assert read_jsonl(out)[0]["completion"] == full[: full.index(stop)]


def test_bad_inputs_fail_clearly(model_dir, tmp_path, capsys):
    path, _, _ = model_dir
    good = write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "text": "hello"}])
    assert run_cli("generate", f"--model={path}", f"--data={good}", f"--output={tmp_path / 'o.npz'}") == 2
    assert ".jsonl" in capsys.readouterr().err
    missing = str(tmp_path / "missing.jsonl")
    assert run_cli("generate", f"--model={path}", f"--data={missing}", f"--output={tmp_path / 'o.jsonl'}") != 0
    assert "missing.jsonl" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"id": "a", "text": "fine"}', "{not json"])
    assert run_cli("generate", f"--model={path}", f"--data={bad}", f"--output={tmp_path / 'o.jsonl'}") != 0
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 2" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_max_length_keeps_the_last_prompt_tokens(model_dir, tmp_path):
    path, model, tokenizer = model_dir
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "long", "text": TEXTS[3]}])
    out = str(tmp_path / "o.jsonl")
    assert run_cli("generate", f"--model={path}", f"--data={data}", f"--max_new_tokens={NEW}", "--max_length=5",
                   f"--output={out}") == 0
    ids = tokenizer(TEXTS[3])["input_ids"][-5:]
    [line] = read_jsonl(out)
    assert line["completion"] == hf_completion(model, tokenizer, list(ids))
