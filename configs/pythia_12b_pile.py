"""Pythia-12B (EleutherAI/pythia-12b, GPT-NeoX) fine-tuned on FLAN tasks, forgetting measured on the
Pile.

  forgetting-jax finetune --config=configs/pythia_12b_pile.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/pythia-12b --config.data.train_path=/data/flan/{task}.jsonl

Settings of the paper's final code (configs/llm/pythia/pythia_12b_ft.yaml; the matrix:
stat_pythia.yaml): those of pythia_6_9b_pile (lr 2e-6, 1000 steps, effective batch 8, 1024 tokens,
the final model, upstream the Pile sample), with 1 example per GPU x 2 accumulation steps x 4 GPUs
there; here the same 8 examples per step in micro-batches of micro_rows=4 rows and every layer
rematerialised (remat_policy full; the paper's code: gradient checkpointing, DeepSpeed ZeRO-3,
paged 8-bit AdamW). fp32 weights and AdamW state take 16 bytes per parameter (about 190 GB), split
over every device (mesh.fsdp = -1): at least 4 x 80 GB GPUs.
"""

from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import config_beside


def get_config(split="flan_id"):
    """split (after the file name): flan_id, ood_tulu or ood_dolly, as in pythia_6_9b_pile."""
    config = config_beside(__file__, "pythia_6_9b_pile.py")
    config.name = "pythia_12b_pile"
    config.model.remat_policy = "full"
    config.train.micro_rows = 4
    tasks, train_tasks, test_tasks = paper_tasks.split(split)
    config.data.tasks = tasks
    config.predict.update(dict(train_tasks=train_tasks, test_tasks=test_tasks))
    return config
