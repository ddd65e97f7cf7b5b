"""The offline demo: a tiny Llama-style model pre-trained on the bundled corpus, then fine-tuned on
24 tasks of the bundled task suite; sized so the whole pipeline runs in minutes on a laptop CPU.

  forgetting-jax pretrain --config=configs/demo.py --workdir=W
  forgetting-jax finetune --config=configs/demo.py --workdir=W --task=add

Pre-training: 2 layers, width 128, the demo tokenizer's 4096 tokens; packed rows of 256 tokens.
Fine-tuning keeps the paper's recipe where it costs nothing (full fine-tuning, 8 examples per
step, warm-up then linear decay, loss on responses, best step by validation loss) and shortens
what a tiny model on a CPU cannot afford (50 steps; a learning rate suited to a small model).

Replay (`forgetting-jax replay --config=configs/demo.py --workdir=W`, after or instead of `run`):
6 tasks of the suite that are not rows of the matrix, fine-tuned with replay as the paper's final
code runs it (replay.protocol=final: 56 steps per replay run, every run keeping its last step);
500 of the 2,000 upstream examples held out to measure forgetting. r = 1/8 rather than the
paper's 1/32 for base models: a replay run would replay only 12 examples at 1/32 (49 at 1/8).
Strategies: the predicted ones, the oracle, and the final code's baselines (random, gt_mir with
its 30 candidates, ppl_median, grad_prod_neg).
"""

from forgetting_jax.experiment import DEMO_TASKS, default_config

def get_config():
    config = default_config()
    config.name = "demo"
    # the default architecture (2 layers, width 128, 4 heads of 32) pre-trained from scratch
    config.model.update(dict(base="pretrain", max_position_embeddings=512))
    config.mesh.update(dict(num_devices=1))
    config.data.update(dict(tasks=DEMO_TASKS, max_length=128))  # the default source: the bundled suite
    config.train.update(dict(lr=3e-4, steps=50, warmup_steps=5, row_length=128, micro_rows=2, eval_every=10,
                             eval_rows=16))
    config.pretrain.update(dict(lr=3e-3, steps=200, warmup_steps=20, batch_size=16, micro_rows=16, row_length=256,
                                log_every=20))
    config.matrix.update(dict(max_length=128))  # the default upstream: 2,000 chunks of the bundled corpus
    config.replay.update(dict(
        test_tasks=("divide", "palindrome", "to_hex", "time_24h", "element_symbol", "definition_family"),
        strategies=("none", "random", "predicted:additive", "predicted:knn", "ground_truth", "online:additive",
                    "gt_mir:30", "ppl_median", "grad_prod_neg"),
        ratio=1 / 8, num_heldout=500))
    return config
