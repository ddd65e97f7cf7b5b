"""The offline demo of forgetting as lost answers (matrix.metric=exact_match).

  forgetting-jax run --config=configs/demo_exact_match.py --workdir=W

The demo (configs/demo.py) with an instruction-tuned base: the bundled corpus pre-training also
trains on the 200 training examples of each of nine suite tasks that are not fine-tuning tasks
(pretrain.demo_tasks; loss on the responses). Those 1,800 examples are the upstream set; every
model answers each by greedy decoding, and an entry of the matrix is 1 when the base model's
answer was right and the fine-tuned model's is wrong; as in the paper's final code
(AuCson/low-rank-forgetting) the columns are only the examples the base answers right
(matrix.em_columns=base_correct) and answers get up to 512 new tokens, judged before the first
blank line. The answers are the suite's exact strings
(answer kind "demo": compared after stripping surrounding whitespace). The report adds the
"Answers lost" section; `predict` gets the `logistic` method (logistic matrix factorization).
"""

from forgetting_jax.experiment import config_beside

UPSTREAM_TASKS = ("divide", "larger", "palindrome", "to_hex", "time_24h", "max_number", "element_symbol",
                  "code_lookup", "definition_family")


def get_config():
    config = config_beside(__file__, "demo.py")
    config.name = "demo_exact_match"
    config.pretrain.update(dict(steps=800, demo_tasks=UPSTREAM_TASKS))
    config.matrix.update(dict(upstream="demo_tasks", upstream_tasks=UPSTREAM_TASKS, metric="exact_match",
                              num_upstream=0, max_length=128))
    return config
