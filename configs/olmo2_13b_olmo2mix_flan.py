"""OLMo-2 13B (allenai/OLMo-2-1124-13B) fine-tuned on FLAN tasks, forgetting measured on a sample
of its pre-training mix (OLMo-2-mix-1124).

  forgetting-jax finetune --config=configs/olmo2_13b_olmo2mix_flan.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/OLMo-2-1124-13B --config.data.train_path=/data/flan/{task}.jsonl

Settings of the paper's final code (configs/llm/olmo2/olmo2_13b_ft_1kstep_lr2e-6.yaml; the matrix:
stat_13b_olmo2pt.yaml): those of olmo2_7b_olmo2mix_flan (lr 2e-6, 1000 steps, effective batch 8,
1024 tokens, the final model, upstream olmo2pt), with 1 example per GPU x 2 accumulation steps x 4
GPUs there; here the same 8 examples per step in micro-batches of micro_rows=4 rows (one row per
device on 4 devices, two micro-batches) and every layer rematerialised (remat_policy full; the
paper's code: gradient checkpointing, DeepSpeed ZeRO-3, paged 8-bit AdamW). fp32 weights and AdamW
state take 16 bytes per parameter (about 210 GB), split over every device (mesh.fsdp = -1): at
least 4 x 80 GB GPUs.
"""

from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import config_beside


def get_config(split="flan_id"):
    """split (after the file name): flan_id, ood_tulu or ood_dolly, as in olmo2_7b_olmo2mix_flan."""
    config = config_beside(__file__, "olmo2_7b_olmo2mix_flan.py")
    config.name = "olmo2_13b_olmo2mix_flan"
    config.model.remat_policy = "full"
    config.train.micro_rows = 4
    tasks, train_tasks, test_tasks = paper_tasks.split(split)
    config.data.tasks = tasks
    config.predict.update(dict(train_tasks=train_tasks, test_tasks=test_tasks))
    return config
