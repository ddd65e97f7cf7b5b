"""Pythia-1B (GPT-NeoX) fine-tuned on FLAN tasks, forgetting measured on the Pile.

  forgetting-jax finetune --config=configs/pythia_1b_pile.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/pythia-1b --config.data.train_path=/data/flan/{task}.jsonl

Pythia's tokenizer has no chat template; conversations use the Tulu/OLMo format
(`data.chat.TULU_CHAT_TEMPLATE`). Recipe as in olmo_1b_dolma_flan.
"""

from forgetting_jax.train.settings import default_config


def get_config():
    config = default_config()
    config.name = "pythia_1b_pile"
    config.mesh.update(dict(data=-1, fsdp=1, tensor=1))
    config.data.update(dict(source="files", reader="flan", train_path="data/flan/{task}.jsonl",
                            validation_fraction=0.1, max_validation=100, max_length=1024))
    config.train.update(dict(row_length=1024, micro_rows=1, eval_every=100, export_dtype="bfloat16"))
    config.matrix.update(dict(
        upstream="lm", upstream_path="data/pile_sample.jsonl", num_upstream=0, max_length=1024,
        dtype="bfloat16"))
    config.replay.update(dict(ratio=1 / 32))  # set replay.test_tasks: FLAN tasks outside data.tasks
    return config
