"""OLMo-7B-Instruct fine-tuned on new instruction tasks (Dolly categories by default; MMLU, BBH or
TruthfulQA with data.reader), forgetting measured on Tulu-v2 examples.

The paper's instruct setting: OLMo-7B-Instruct is fine-tuned on the subjects of MMLU (5-shot
prompts from the dev split), the tasks of BIG-Bench Hard, the categories of TruthfulQA and the
Dolly categories, one task per run (the paper's code uses LoRA for these: train.method=lora), and
forgetting is measured on a sample of 1,000 Tulu-v2 examples, the model's own instruction data:
  --config.data.reader=mmlu --config.data.train_path=data/mmlu/test/{task}_test.csv \
      --config.data.reader_kwargs='{"dev_path": "data/mmlu/dev/{task}_dev.csv"}'
  --config.data.reader=bbh --config.data.train_path=data/bbh/{task}.json
  --config.data.reader=truthfulqa --config.data.train_path=data/TruthfulQA.csv
  --config.matrix.num_upstream=1000
Forgetting as lost answers (the paper's exact-match view of the instruct model): add
  --config.matrix.metric=exact_match
and every model answers each Tulu prompt by greedy decoding (answer kind "short": SQuAD
normalisation, exact match; `matrix.max_new_tokens` sets the budget); the matrix is then the binary
drop D[i, j] = 1[right before, wrong after], completed by `forgetting-jax predict
--methods=logistic,...`.

  forgetting-jax finetune --config=configs/olmo_7b_instruct_tulu.py --workdir=W --task=open_qa \\
      --config.model.hf_dir=/models/OLMo-7B-Instruct-hf --config.data.train_path=/data/dolly.jsonl

Recipe: as the base models, but 100 steps (the paper's setting for the instruct model).

Replay (`forgetting-jax replay`): one Tulu-v2 example per 8 new-task examples (r = 1/8, the
paper's ratio for instruct models), trained on its response like any chat example. The matrix's
tasks (data.tasks) train the prediction; name the new tasks in replay.test_tasks, e.g.
  --config.data.tasks=brainstorming,classification,closed_qa,creative_writing,general_qa,summarization \
  --config.replay.test_tasks=information_extraction,open_qa
"""

from forgetting_jax.experiment import default_config


def get_config():
    config = default_config()
    config.name = "olmo_7b_instruct_tulu"
    config.model.update(dict(remat_policy="dots_no_batch"))
    config.mesh.update(dict(data=1, fsdp=-1))
    config.data.update(dict(source="files", reader="dolly", train_path="data/dolly.jsonl", max_validation=100))
    config.train.update(dict(steps=100, eval_every=10, export_dtype="bfloat16"))
    config.matrix.update(dict(
        upstream="tulu", upstream_path="data/tulu_v2_sample.jsonl", num_upstream=0, dtype="bfloat16"))
    config.replay.update(dict(ratio=1 / 8))  # the paper's ratio for instruct models; set replay.test_tasks
    return config
