"""Pythia-1B (GPT-NeoX) fine-tuned on FLAN tasks, forgetting measured on the Pile.

  forgetting-jax finetune --config=configs/pythia_1b_pile.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/pythia-1b --config.data.train_path=/data/flan/{task}.jsonl

Pythia's tokenizer has no chat template; conversations use the Tulu/OLMo format
(`data.chat.TULU_CHAT_TEMPLATE`). Recipe as in olmo_1b_dolma_flan.
"""

from forgetting_jax.experiment import default_config


def get_config():
    config = default_config()
    config.name = "pythia_1b_pile"
    config.data.update(dict(source="files", train_path="data/flan/{task}.jsonl", max_validation=100))
    config.train.update(dict(export_dtype="bfloat16"))
    config.matrix.update(dict(
        upstream="lm", upstream_path="data/pile_sample.jsonl", num_upstream=0, dtype="bfloat16"))
    # replay: the default ratio 1/32 (the paper's for base models); set replay.test_tasks: FLAN tasks
    # outside data.tasks
    return config
