"""Rebuilds the demo tokenizer: byte-level BPE trained on the demo corpus with `tokenizers`.

    python -m forgetting_jax.data.demo.build_tokenizer [--output DIR] [--vocab_size 4096]

The result is a Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json, the chat
template) that `AutoTokenizer.from_pretrained` loads offline. Special tokens: <|pad|> (id 0, the
padding of packed rows), <|endoftext|> (id 1, both BOS, prepended by `tokenizer(text)`, and EOS,
closing each response), and the chat role markers <|system|>, <|user|>, <|assistant|>. Digits are
split one per token. Training is deterministic: the same corpus gives the same files, and the
directory is built in a temporary folder and renamed into place.
"""

import argparse
import json
import os
import shutil
import tempfile

from forgetting_jax.data.chat import TULU_CHAT_TEMPLATE
from forgetting_jax.utils.fingerprint import file_fingerprint
from forgetting_jax.utils.io import write_json

PAD, EOS = "<|pad|>", "<|endoftext|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, EOS] + ROLE_TOKENS
VOCAB_SIZE = 4096


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A `tokenizers.Tokenizer` trained on `texts` (byte-level BPE, digits split, BOS prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    eos_id = tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, eos_id)])
    return tokenizer


def save_tokenizer(tokenizer, output: str, info: dict) -> None:
    """Saves a Hugging Face tokenizer directory at `output`, replacing it whole."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS, model_max_length=1 << 20,
        chat_template=TULU_CHAT_TEMPLATE)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(output) + ".")
    try:
        wrapped.save_pretrained(tmp)
        config_path = os.path.join(tmp, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config["chat_template"] = TULU_CHAT_TEMPLATE
        write_json(config_path, config)
        write_json(os.path.join(tmp, "build.json"), {**info, "files": file_fingerprint(tmp)})
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.exists(output):
            old = tmp + ".old"
            os.replace(output, old)
        os.replace(tmp, output)
        if old:
            shutil.rmtree(old)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def main(argv: list[str] | None = None) -> None:
    from forgetting_jax.data.demo import corpus_path, tokenizer_path
    from forgetting_jax.data.demo.corpus import read_demo_corpus

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=tokenizer_path())
    parser.add_argument("--corpus", default=corpus_path())
    parser.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    texts = [r["text"] for r in read_demo_corpus(args.corpus)]
    tokenizer = train_tokenizer(texts, args.vocab_size)
    info = {"corpus": file_fingerprint(args.corpus), "vocab_size": tokenizer.get_vocab_size()}
    save_tokenizer(tokenizer, args.output, info)
    print(f"wrote {args.output}: vocabulary {info['vocab_size']}, corpus {info['corpus']}")


if __name__ == "__main__":
    main()
