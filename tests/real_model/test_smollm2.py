"""A real pretrained model end to end: SmolLM2-135M-Instruct from its 4-bit GGUF file.

The conversion equals transformers' own GGUF loader tensor for tensor and token for token;
`score` (lm and chat) and `generate` (greedy, prompt-only chat) given the .gguf file match
transformers on the converted directory; a micro `run` from the .gguf file gives a finite matrix.
"""

import json
import os

import numpy as np
import pytest
import torch

from command_line import run_cli, write_jsonl
from tiny_hf import hf_mean_nll

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong was the first person to walk on its surface.",
    "Rain fell all night, and by morning the river had risen over its banks.",
    "Ünïcödé text — with “curly quotes”, emoji 😀 and 日本語 — tokenizes byte by byte.",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Opposite of hot?"},
     {"role": "assistant", "content": "Cold."}],
    [{"role": "user", "content": "What is 12 plus 30?"}, {"role": "assistant", "content": "42."},
     {"role": "user", "content": "And doubled?"}, {"role": "assistant", "content": "84."}],
]
PROMPTS = ["What is the capital of France?", "Name three primary colors.", "Write a haiku about the sea."]


def test_conversion_equals_transformers_gguf_loader(smollm2_gguf, smollm2_dir):
    import transformers

    from forgetting_jax.models.safetensors_io import SafetensorsFile

    folder, name = os.path.split(smollm2_gguf)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state = reference.state_dict()
    ours = SafetensorsFile(os.path.join(smollm2_dir, "model.safetensors"))
    assert sorted(ours.names()) == sorted(k for k in state if k != "lm_head.weight")  # tied: no lm_head
    for key in ours.names():
        np.testing.assert_array_equal(ours.get(key), state[key].numpy(), err_msg=key)
    with open(os.path.join(smollm2_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    expected = reference.config
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "rms_norm_eps", "tie_word_embeddings", "bos_token_id",
                  "eos_token_id", "pad_token_id"):
        assert config[field] == getattr(expected, field), field
    assert config["rope_theta"] == expected.rope_parameters["rope_theta"]

    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    for text in TEXTS + ["The year 2024 had 366 days.", "<|im_start|>user\nhi<|im_end|>\n", "  two  spaces\n\n"]:
        assert tokenizer(text)["input_ids"] == reference_tokenizer(text)["input_ids"], text
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer("2024")["input_ids"]) == 4  # SmolLM's pre-tokenizer: one token per digit
    for chat in CHATS:
        assert (tokenizer.apply_chat_template(chat, tokenize=False)
                == reference_tokenizer.apply_chat_template(chat, tokenize=False))
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")


def test_score_from_the_gguf_file_matches_transformers(smollm2_gguf, smollm2_reference, tmp_path):
    from forgetting_jax.data.chat import encode_chat

    model, tokenizer = smollm2_reference
    lm = write_jsonl(tmp_path / "lm.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"id": f"c{i}", "messages": m} for i, m in enumerate(CHATS)])
    for data, fmt in ((lm, "lm"), (chat, "chat")):
        out = str(tmp_path / f"{fmt}.npz")
        assert run_cli("score", f"--model={smollm2_gguf}", f"--data={data}", f"--format={fmt}",
                       f"--output={out}") == 0
        nll = np.load(out)["nll"]
        if fmt == "lm":
            expected = [hf_mean_nll(model, ids, np.ones(len(ids), bool))
                        for ids in (tokenizer(t)["input_ids"] for t in TEXTS)]
        else:
            encoded = [encode_chat(tokenizer, m, 1024) for m in CHATS]
            expected = [hf_mean_nll(model, list(e.ids), e.mask) for e in encoded]
        np.testing.assert_allclose(nll, expected, atol=1e-4, rtol=1e-4, err_msg=fmt)
        # a pretrained model, not noise: far below log(49152) = 10.8 nats a token
        assert np.mean(nll) < 5.0, (fmt, nll)


def test_greedy_chat_completions_match_transformers(smollm2_gguf, smollm2_reference, tmp_path):
    model, tokenizer = smollm2_reference
    data = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "messages": [{"role": "user", "content": p}]}
                                              for i, p in enumerate(PROMPTS)])
    out = str(tmp_path / "g.jsonl")
    assert run_cli("generate", f"--model={smollm2_gguf}", f"--data={data}", "--format=chat", "--max_new_tokens=16",
                   f"--output={out}") == 0
    with open(out, encoding="utf-8") as f:
        ours = [json.loads(line)["completion"] for line in f]
    for prompt, completion in zip(PROMPTS, ours):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            generated = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                                       do_sample=False, max_new_tokens=16, eos_token_id=tokenizer.eos_token_id)
        expected = tokenizer.decode(generated[0, len(ids):], skip_special_tokens=True)
        assert completion == expected, prompt
    assert "Paris" in ours[0]


def test_micro_run_from_the_gguf_file_gives_a_finite_matrix(smollm2_gguf, tmp_path):
    from config_files import load_config
    from forgetting_jax.experiment import as_experiment
    from forgetting_jax.matrix.run import run_pipeline

    config = load_config("smollm2_instruct")
    config.model.hf_dir = smollm2_gguf
    config.data.update(dict(tasks=("antonym",), max_validation=4))
    config.train.update(dict(steps=2, eval_every=2, log_every=1, batch_size=4, row_length=128))
    config.matrix.update(dict(num_upstream=12, max_length=64))
    workdir = str(tmp_path / "W")
    summary = run_pipeline(as_experiment(config), workdir, analyze=False)
    matrix = np.load(summary.matrix_path)
    assert matrix["Z"].shape == (1, 12)
    assert np.isfinite(matrix["Z"]).all() and np.abs(matrix["Z"]).max() > 0
    converted = os.listdir(os.path.join(workdir, "gguf"))
    assert [n for n in converted if n.startswith("SmolLM2-135M-Instruct.Q4_1-")]

    # forecast with the .gguf file itself as the "fine-tuned" model: its tokenizer is the base's,
    # and the k scored examples forget nothing (the same weights as the base that scored them).
    # A forecast needs two rows: the one row twice, with the matrix's provenance.
    from forgetting_jax.forecast.forecast import ForecastSettings, forecast
    from forgetting_jax.matrix.provenance import FIELDS

    two_rows = str(tmp_path / "two_rows.npz")
    np.savez(two_rows, Z=np.vstack([matrix["Z"]] * 2), tasks=np.asarray(["antonym", "antonym_again"]),
             example_ids=matrix["example_ids"], base_nll=matrix["base_nll"], **{k: matrix[k] for k in FIELDS})
    result = forecast(two_rows, smollm2_gguf, ForecastSettings(k=4, method="train_mean"))
    assert result.summary["checkpoint"] == "gguf" and result.summary["base_check"]["tokenizer"] == "same"
    assert len(result.observed) == 4 and max(abs(v) for v in result.observed.values()) < 1e-3
