"""MPT-7B (mosaicml/mpt-7b, the mpt family: ALiBi) fine-tuned on FLAN tasks, forgetting measured on
RedPajama, the open reproduction of its pre-training data.

  forgetting-jax finetune --config=configs/mpt_7b_redpajama_flan.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/mpt-7b --config.data.train_path=/data/flan/{task}.jsonl

Settings of the paper's final code (AuCson/low-rank-forgetting:
configs/llm/mpt_ocl/7b_mpt_ft_flan_1kstep_lr2e-6.yaml over configs/llm/llm_defaults.yaml, run by
scripts/run_stat_mpt/train_flan_7b_ft_2e-6.sh): full fine-tuning, lr 2e-6, 1000 steps, an effective
batch of 8 examples (2 per GPU x 4 GPUs there; here 8 examples per step packed into rows,
micro_rows=8), the last 1024 tokens of each example, 10 warm-up steps, bf16 compute, loss on
responses, validation every 100 steps, the final model (train.result=last). Upstream: not Dolma.
Its matrix script (scripts/run_stat_mpt/stat_flan_7b_ft_2e-6.sh, config stats/mpt_ft/
7b_flan_redpajama.yaml) scores `redpajama`: 100,000 documents of
togethercomputer/RedPajama-Data-1T-Sample (seed 0) cut into chunks of 2048 MPT tokens
(data_utils/preprocess_redpajama.py), 10,000 of them subsampled (--subsample_pt 10000). Here:
matrix.upstream_path holds RedPajama documents as {"text", "id", "source"} lines (source: arxiv,
books, c4, cc, github, stackexchange, wikipedia), chunked to matrix.max_length = 2048 tokens (MPT's
max_seq_len), 10,000 chunks kept (a seeded subsample). MPT's tokenizer (GPT-NeoX-20B's) has no chat
template: conversations use the Tulu/OLMo format, as the paper's code does. The paper's scripts also
train its Tulu and Dolly tasks: the `:ood_tulu` and `:ood_dolly` splits add those rows.
Differences: the paper's code stops at 3 epochs when that comes first (min(1000, 3 N / 8) steps for
N training examples) and uses paged 8-bit AdamW; here AdamW keeps fp32 state, split over every
device (mesh.fsdp = -1). Attention is XLA's (cuDNN's packed kernel takes no ALiBi bias).
model.hf_dir: transformers' native MPT layout (mosaicml/mpt-7b's own); the import reads safetensors,
so a download holding only PyTorch .bin shards is converted once (from_pretrained, save_pretrained).
"""

from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import config_beside


def get_config(split="flan_id"):
    """split (after the file name: --config=configs/mpt_7b_redpajama_flan.py:ood_dolly): flan_id,
    ood_tulu or ood_dolly (data/paper_tasks.py)."""
    config = config_beside(__file__, "olmo_7b_dolma_flan.py")  # fsdp over every device, remat, bf16 scoring
    config.name = "mpt_7b_redpajama_flan"
    config.train.update(dict(result="last", micro_rows=8))
    config.matrix.update(dict(upstream_path="data/redpajama_sample.jsonl", max_length=2048, num_upstream=10000))
    tasks, train_tasks, test_tasks = paper_tasks.split(split)
    config.data.tasks = tasks
    config.predict.update(dict(train_tasks=train_tasks, test_tasks=test_tasks))
    return config
