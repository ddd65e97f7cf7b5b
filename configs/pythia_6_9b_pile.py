"""Pythia-6.9B (EleutherAI/pythia-6.9b, GPT-NeoX) fine-tuned on FLAN tasks, forgetting measured on
the Pile.

  forgetting-jax finetune --config=configs/pythia_6_9b_pile.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/pythia-6.9b --config.data.train_path=/data/flan/{task}.jsonl

Settings of the paper's final code (AuCson/low-rank-forgetting: configs/llm/pythia/pythia_7b_ft.yaml
over configs/llm/llm_defaults.yaml; the matrix: configs/llm/pythia/stat_pythia.yaml): full
fine-tuning, lr 2e-6, 1000 steps, an effective batch of 8 examples (2 per GPU x 4 GPUs there; here
8 examples per step packed into rows, micro_rows=8), the last 1024 tokens of each example, 10
warm-up steps, bf16 compute, loss on responses, validation every 100 steps, the final model
(train.result=last). Upstream: `pile`, the first 10,000 documents of the Pile
(monology/pile-uncopyrighted) longer than 100 characters, ids `<pile_set_name>_<index>`
(scripts/data_create/pile_sample.py); matrix.upstream_path holds Pile lines (`text`,
`meta.pile_set_name`), scored in chunks of matrix.max_length tokens (the paper's code truncated each
document to 2000 tokens). Pythia's tokenizer has no chat template: conversations use the Tulu/OLMo
format, as the paper's code does (chat_template_name allenai/OLMo-7B-Instruct-hf). The paper's
scripts (scripts/run_stat_pythia) also train its Tulu and Dolly tasks: the `:ood_tulu` and
`:ood_dolly` splits add those rows. Differences: the paper's code stops at 3 epochs when that comes
first (min(1000, 3 N / 8) steps for N training examples) and uses paged 8-bit AdamW; here AdamW
keeps fp32 state, split over every device (mesh.fsdp = -1).
"""

from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import config_beside


def get_config(split="flan_id"):
    """split (after the file name: --config=configs/pythia_6_9b_pile.py:ood_tulu): flan_id, ood_tulu or
    ood_dolly (data/paper_tasks.py)."""
    config = config_beside(__file__, "olmo_7b_dolma_flan.py")  # fsdp over every device, remat, bf16 scoring
    config.name = "pythia_6_9b_pile"
    config.train.update(dict(result="last", micro_rows=8))
    config.matrix.upstream_path = "data/pile_sample.jsonl"
    tasks, train_tasks, test_tasks = paper_tasks.split(split)
    config.data.tasks = tasks
    config.predict.update(dict(train_tasks=train_tasks, test_tasks=test_tasks))
    return config
