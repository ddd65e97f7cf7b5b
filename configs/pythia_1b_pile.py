"""Pythia-1B (GPT-NeoX) fine-tuned on FLAN tasks, forgetting measured on the Pile.

  forgetting-jax finetune --config=configs/pythia_1b_pile.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/pythia-1b --config.data.train_path=/data/flan/{task}.jsonl

Pythia's tokenizer has no chat template; conversations use the Tulu/OLMo format
(`data.chat.TULU_CHAT_TEMPLATE`). Recipe as in olmo_1b_dolma_flan.
"""

from forgetting_jax.experiment import config_beside


def get_config():
    config = config_beside(__file__, "olmo_1b_dolma_flan.py")  # the same recipe and task data
    config.name = "pythia_1b_pile"
    config.matrix.upstream_path = "data/pile_sample.jsonl"
    return config
