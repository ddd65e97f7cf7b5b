"""Greedy decoding with the KV cache (models/generate.py) against transformers
`generate(do_sample=False)` in fp32, on tiny random checkpoints of every supported family: one
prompt at a time and batches of mixed lengths, EOS and stop sequences, one compilation per shape."""

import numpy as np
import pytest
import torch

from forgetting_jax.models.generate import Generator, _PROGRAMS, bucket_length, generate_text
from forgetting_jax.models.loading import load_model
from tiny_hf import FAMILY_CONFIGS, make_tiny_model

NEW = 12
LENGTHS = (3, 7, 11, 16)


def _prompts(vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, n).astype(np.int32) for n in LENGTHS]


def _hf_one(model, prompt, new=NEW, eos=None):
    with torch.no_grad():
        ids = torch.as_tensor(prompt[None].astype(np.int64))
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                             eos_token_id=eos, pad_token_id=0)
    tokens = out[0, len(prompt):].numpy().astype(np.int32)
    if eos is not None and (tokens == eos).any():
        tokens = tokens[: int(np.argmax(tokens == eos))]
    return tokens


def _hf_batch(model, prompts, new=NEW):
    longest = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), longest), np.int64)
    mask = np.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, longest - len(p):], mask[r, longest - len(p):] = p, 1
    with torch.no_grad():
        out = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), do_sample=False,
                             max_new_tokens=new, min_new_tokens=new, eos_token_id=None, pad_token_id=0)
    return [row[longest:].numpy().astype(np.int32) for row in out]


@pytest.fixture(scope="module", params=sorted(FAMILY_CONFIGS))
def family(request, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp(request.param))
    model = make_tiny_model(request.param, directory)
    model.generation_config.eos_token_id = None
    config, params = load_model(directory)
    return request.param, model, config, params


def test_one_prompt_at_a_time_matches_transformers(family):
    name, model, config, params = family
    generator = Generator(config, params)
    for prompt in _prompts(config.vocab_size):
        [ours], _ = generator.generate([prompt], NEW, batch_size=1)
        np.testing.assert_array_equal(ours, _hf_one(model, prompt), err_msg=f"{name}, prompt of {len(prompt)}")


def test_batch_of_mixed_lengths_matches_transformers(family):
    name, model, config, params = family
    prompts = _prompts(config.vocab_size, seed=1)
    ours, stats = Generator(config, params).generate(prompts, NEW, batch_size=8)
    assert stats.new_tokens == NEW * len(prompts) and stats.batches == 1
    for prompt, got in zip(prompts, ours):  # each as transformers decodes it alone
        np.testing.assert_array_equal(got, _hf_one(model, prompt), err_msg=f"{name}, prompt of {len(prompt)}")
    for got, want in zip(ours, _hf_batch(model, prompts)):  # and as its left-padded batch does
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_eos_ends_a_row_and_is_left_out(family):
    name, model, config, params = family
    prompt = _prompts(config.vocab_size, seed=2)[2]
    full = _hf_one(model, prompt)
    eos = int(full[3])  # a token the model produces at step 3 (perhaps earlier too)
    want = _hf_one(model, prompt, eos=eos)
    assert len(want) <= 3 and eos not in want.tolist()
    [ours], stats = Generator(config, params).generate([prompt], NEW, eos_token_ids=[eos], batch_size=1)
    np.testing.assert_array_equal(ours, want)
    assert stats.new_tokens == len(want) + 1  # the EOS was generated, then left out


def test_stop_sequences_end_rows_early_and_shapes_compile_once(tmp_path):
    make_tiny_model("llama", str(tmp_path))
    config, params = load_model(str(tmp_path))
    generator = Generator(config, params)
    prompts = _prompts(config.vocab_size, seed=3)
    full, _ = generator.generate(prompts, NEW, batch_size=2)
    stop = full[1][4:6].tolist()  # the 5th and 6th tokens of the second prompt's completion
    stopped, _ = generator.generate(prompts, NEW, stop_token_sequences=[stop], batch_size=2)
    first = next(t for t in range(1, NEW) if full[1][t - 1:t + 1].tolist() == stop)
    np.testing.assert_array_equal(stopped[1], full[1][: first + 1])  # the stop sequence kept, nothing after
    for got, want in zip(stopped, full):
        np.testing.assert_array_equal(got, want[: len(got)])
    # other prompts in the same buckets, other stop sequences and EOS ids: nothing compiles again
    program = _PROGRAMS[(config, NEW, None)]
    compiled = program._cache_size()
    others = _prompts(config.vocab_size, seed=4)
    assert {bucket_length(len(p)) for p in others} == {bucket_length(len(p)) for p in prompts}
    generator.generate(others, NEW, eos_token_ids=[5, 6], stop_token_sequences=[[7], [8, 9]], batch_size=2)
    assert program._cache_size() == compiled


def test_generate_text_cuts_at_stop_strings(tmp_path):
    from transformers import AutoTokenizer

    from forgetting_jax.data.demo import tokenizer_path

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path())
    make_tiny_model("llama", str(tmp_path), vocab_size=len(tokenizer))
    config, params = load_model(str(tmp_path))
    generator = Generator(config, params)
    texts = ["def add(a, b):", "The quick brown fox"]
    plain, _ = generate_text(generator, tokenizer, texts, 16)
    stop = plain[0][3:6]
    assert stop
    cut, _ = generate_text(generator, tokenizer, texts, 16, stop_strings=[stop])
    assert cut[0] == plain[0][: plain[0].index(stop)]
    assert plain[1].startswith(cut[1]) and stop not in cut[1]
