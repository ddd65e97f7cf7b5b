"""The offline demo of forgetting as lost answers (matrix.metric=exact_match).

  forgetting-jax run --config=configs/demo_exact_match.py --workdir=W

The demo (configs/demo.py) with an instruction-tuned base: the bundled corpus pre-training also
trains on the 200 training examples of each of nine suite tasks that are not fine-tuning tasks
(pretrain.demo_tasks; loss on the responses). Those 1,800 examples are the upstream set; every
model answers each by greedy decoding, and an entry of the matrix is 1 when the base model's
answer was right and the fine-tuned model's is wrong. The answers are the suite's exact strings
(answer kind "demo": compared after stripping surrounding whitespace). The report adds the
"Answers lost" section; `predict` gets the `logistic` method (logistic matrix factorization).
"""

import importlib.util
import os


def demo_config():
    """configs/demo.py's config (this file's neighbour, whatever the working directory)."""
    spec = importlib.util.spec_from_file_location("demo_config", os.path.join(os.path.dirname(__file__), "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


UPSTREAM_TASKS = ("divide", "larger", "palindrome", "to_hex", "time_24h", "max_number", "element_symbol",
                  "code_lookup", "definition_family")


def get_config():
    config = demo_config()
    config.name = "demo_exact_match"
    config.pretrain.update(dict(steps=800, demo_tasks=UPSTREAM_TASKS))
    config.matrix.update(dict(upstream="demo_tasks", upstream_tasks=UPSTREAM_TASKS, metric="exact_match",
                              num_upstream=0, max_length=128))
    return config
