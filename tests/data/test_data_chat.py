"""Response-only masks, templates and truncation of chat records (data/chat.py, data/examples.py)."""

import copy

import numpy as np
import pytest

from forgetting_jax.data.chat import TULU_CHAT_TEMPLATE, encode_chat, render_chat
from forgetting_jax.data.errors import DataError, ResponseTooLongError
from forgetting_jax.data.examples import encode_record, encode_records

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "It is 42."},
]
MULTI_TURN = [
    {"role": "user", "content": "Say hi."},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "Say bye."},
    {"role": "assistant", "content": "bye now"},
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def scored_text(tokenizer, encoded):
    return tokenizer.decode(encoded.ids[encoded.mask].tolist(), skip_special_tokens=False)


def with_template(tokenizer, template, eos=None):
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    if eos is not None:
        other.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        other.eos_token = eos
    return other


def test_mask_covers_final_response_and_eos(demo_tokenizer):
    encoded = encode_chat(demo_tokenizer, CONVERSATION)
    assert encoded.ids.dtype == np.int32 and encoded.mask.dtype == np.bool_
    assert scored_text(demo_tokenizer, encoded) == "It is 42.<|endoftext|>"
    first = int(np.argmax(encoded.mask))
    assert encoded.mask[first:].all() and not encoded.mask[:first].any()  # one contiguous span, at the end
    assert demo_tokenizer.decode(encoded.ids[:first].tolist()).endswith("<|assistant|>\n")
    assert encoded.num_truncated == 0 and encoded.ids[0] == demo_tokenizer.bos_token_id


def test_only_the_last_assistant_turn_is_scored(demo_tokenizer):
    encoded = encode_chat(demo_tokenizer, MULTI_TURN)
    assert scored_text(demo_tokenizer, encoded) == "bye now<|endoftext|>"
    assert "hi<|endoftext|>" in demo_tokenizer.decode(encoded.ids.tolist())


def test_template_fallback_is_the_documented_tulu_format(demo_tokenizer):
    no_template = with_template(demo_tokenizer, None)
    text = render_chat(no_template, CONVERSATION)
    assert text == ("<|endoftext|><|system|>\nBe brief.\n<|user|>\nWhat is 12 + 30?\n"
                    "<|assistant|>\nIt is 42.<|endoftext|>\n")
    assert demo_tokenizer.chat_template == TULU_CHAT_TEMPLATE
    a, b = encode_chat(no_template, CONVERSATION), encode_chat(demo_tokenizer, CONVERSATION)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_tokenizer_own_template_with_trim_and_its_eos(demo_tokenizer):
    chatml = with_template(demo_tokenizer, CHATML, eos="<|im_end|>")
    messages = MULTI_TURN[:-1] + [{"role": "assistant", "content": "  bye now \n"}]
    encoded = encode_chat(chatml, messages)
    assert scored_text(chatml, encoded) == "bye now<|im_end|>"
    assert chatml.decode(encoded.ids.tolist()).startswith("<|im_start|>user\nSay hi.<|im_end|>")


LLAMA2 = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
          "{% else %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}{% endfor %}")


def test_eos_after_a_space_and_a_one_letter_response(demo_tokenizer):
    llama = with_template(demo_tokenizer, LLAMA2)
    messages = [{"role": "user", "content": "Answer: A or B?"}, {"role": "assistant", "content": "A"}]
    assert scored_text(llama, encode_chat(llama, messages)) == " A <|endoftext|>"


def test_tokenizers_without_offsets_give_the_same_mask(demo_tokenizer):
    class NoOffsets:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, text, **kwargs):
            if kwargs.get("return_offsets_mapping"):
                raise NotImplementedError
            return self.inner(text, **kwargs)

    a, b = encode_chat(NoOffsets(demo_tokenizer), MULTI_TURN), encode_chat(demo_tokenizer, MULTI_TURN)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_templates_that_rewrite_the_response_are_reported(demo_tokenizer):
    shouting = with_template(demo_tokenizer, "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | upper }}{% endfor %}")
    with pytest.raises(DataError, match="verbatim"):
        encode_chat(shouting, MULTI_TURN)
    with pytest.raises(DataError, match="assistant turn"):
        encode_chat(demo_tokenizer, MULTI_TURN[:-1])


def test_truncation_keeps_the_end_and_reports_long_responses(demo_tokenizer):
    full = encode_chat(demo_tokenizer, CONVERSATION)
    num_response = int(full.mask.sum())
    kept = encode_chat(demo_tokenizer, CONVERSATION, max_length=num_response + 1)
    np.testing.assert_array_equal(kept.ids, full.ids[-(num_response + 1):])
    np.testing.assert_array_equal(kept.mask, full.mask[-(num_response + 1):])
    assert kept.num_truncated == len(full.ids) - num_response - 1 and not kept.mask[0]
    with pytest.raises(ResponseTooLongError, match=f"response has {num_response} tokens"):
        encode_chat(demo_tokenizer, CONVERSATION, max_length=num_response)
    assert encode_chat(demo_tokenizer, CONVERSATION, max_length=10_000).num_truncated == 0


def test_encode_records_reports_or_skips_too_long(demo_tokenizer, tmp_path, caplog):
    records = [{"id": "short", "task": "t", "messages": CONVERSATION[1:]},
               {"id": "long", "task": "t", "messages": [CONVERSATION[1], {"role": "assistant", "content": "word " * 50}]}]
    with pytest.raises(ResponseTooLongError, match="record 'long'"):
        encode_records(demo_tokenizer, records, max_length=24)
    sidecar = str(tmp_path / "skipped.jsonl")
    examples = encode_records(demo_tokenizer, records, max_length=24, skip_bad=True, skipped_path=sidecar)
    assert [e.id for e in examples] == ["short"] and "skipped 1 of 2" in caplog.text
    assert '"id": "long"' in open(sidecar).read()


def test_training_and_scoring_share_the_encoding(demo_tokenizer):
    record = {"id": "x", "task": "t", "messages": CONVERSATION}
    a, b = encode_record(demo_tokenizer, record, 64), encode_chat(demo_tokenizer, CONVERSATION, 64)
    np.testing.assert_array_equal(a.mask, b.mask)
    example = encode_records(demo_tokenizer, [record], 64)[0]
    assert example.id == "x" and example.task == "t" and example.pair[0] is example.ids
