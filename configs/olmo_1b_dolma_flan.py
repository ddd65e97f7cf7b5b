"""OLMo-1B fine-tuned on FLAN tasks, forgetting measured on Dolma (the paper's main setting).

  forgetting-jax finetune --config=configs/olmo_1b_dolma_flan.py --workdir=W --task=NAME \\
      --config.model.hf_dir=/models/OLMo-1B-hf --config.data.train_path=/data/flan/{task}.jsonl

model.hf_dir: an HF directory of allenai/OLMo-1B-hf (safetensors). data.train_path: FLAN records
(`inputs`, `targets`), one file per task ({task} in the path) or one file with a `task` field.
Recipe (paper, final version): full fine-tuning, lr 2e-6, 1000 steps, 8 examples per step, the
last 1024 tokens of each example, 10 warm-up steps then linear decay, bf16 compute with fp32
master weights, loss on response tokens, and the last step's model (the final code's Trainer keeps
it; train.result=best takes the best step by validation loss instead).
"""

from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import default_config


def get_config(split="flan_id"):
    """split (after the file name: --config=configs/olmo_1b_dolma_flan.py:ood_dolly): the paper's prediction split,
    flan_id (20 FLAN test tasks predicted from the other 46), ood_tulu or ood_dolly (Tulu or Dolly
    tasks predicted from those 46 FLAN rows); data.tasks holds the split's rows."""
    config = default_config()
    config.name = "olmo_1b_dolma_flan"
    config.data.update(dict(source="files", train_path="data/flan/{task}.jsonl", max_validation=100))
    config.train.update(dict(export_dtype="bfloat16", result="last"))
    config.matrix.update(dict(
        upstream="lm", upstream_path="data/dolma_sample.jsonl", num_upstream=0, dtype="bfloat16"))
    tasks, train_tasks, test_tasks = paper_tasks.split(split)
    config.data.tasks = tasks
    config.predict.update(dict(train_tasks=train_tasks, test_tasks=test_tasks))
    # replay as the paper's final code runs it (configs/llm/replay_ocl/*.yaml there; replay.protocol=final):
    # r = 1/32, T = 0.1, 10,000 Dolma examples held out, the completion strategies beside its baselines;
    # set replay.test_tasks: FLAN tasks outside data.tasks
    config.replay.update(dict(strategies=("none", "random", "predicted:additive", "predicted:knn", "predicted:als",
                                          "ground_truth", "gt_mir:30", "ppl_median", "grad_prod_neg")))
    return config
