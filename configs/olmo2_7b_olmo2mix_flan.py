"""OLMo-2 7B (allenai/OLMo-2-1124-7B) fine-tuned on FLAN tasks, forgetting measured on a sample of
its pre-training mix (OLMo-2-mix-1124).

  forgetting-jax finetune --config=configs/olmo2_7b_olmo2mix_flan.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/OLMo-2-1124-7B --config.data.train_path=/data/flan/{task}.jsonl

Settings of the paper's final code (AuCson/low-rank-forgetting:
configs/llm/olmo2/olmo2_7b_ft_1kstep_lr2e-6.yaml over configs/llm/llm_defaults.yaml; the matrix:
configs/llm/olmo2/stat_7b_olmo2pt.yaml): full fine-tuning, lr 2e-6, 1000 steps, an effective batch
of 8 examples (2 per GPU x 4 GPUs there; here 8 examples per step, packed into rows, micro_rows=8:
one micro-batch), the last 1024 tokens of each example, 10 warm-up steps, bf16 compute, loss on
responses, validation every 100 steps, and the final model (train.result=last: no best-step
selection). Its upstream examples are `olmo2pt`, a sample of the OLMo-2 pre-training mix (ids
`<domain>_<index>`): matrix.upstream_path holds such documents as {"text", "id", "source"} lines
(source: the mix's domain), scored in chunks of matrix.max_length tokens. The paper's scripts
(scripts/run_stat_olmo2) also train its Tulu and Dolly tasks: the `:ood_tulu` and `:ood_dolly`
splits add those rows. Differences: the paper's code stops at 3 epochs when that comes first
(min(1000, 3 N / 8) steps for N training examples; set train.steps for such tasks) and uses paged
8-bit AdamW; here AdamW keeps fp32 state (16 bytes per parameter with the fp32 weights: fsdp over
every device, mesh.fsdp = -1).
"""

from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import config_beside


def get_config(split="flan_id"):
    """split (after the file name: --config=configs/olmo2_7b_olmo2mix_flan.py:ood_dolly): the paper's
    prediction split, flan_id, ood_tulu or ood_dolly (data/paper_tasks.py)."""
    config = config_beside(__file__, "olmo_7b_dolma_flan.py")  # fsdp over every device, remat, bf16 scoring
    config.name = "olmo2_7b_olmo2mix_flan"
    config.train.update(dict(result="last", micro_rows=8))
    config.matrix.upstream_path = "data/olmo2_mix_sample.jsonl"
    tasks, train_tasks, test_tasks = paper_tasks.split(split)
    config.data.tasks = tasks
    config.predict.update(dict(train_tasks=train_tasks, test_tasks=test_tasks))
    return config
