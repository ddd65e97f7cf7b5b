"""Fast feedback on one GPU: any small Hugging Face model, a few demo tasks, the paper's batch of
8 examples, short runs with frequent validation and logging.

  forgetting-jax finetune --config=configs/single_gpu_debug.py --workdir=W --task=add \\
      --config.model.hf_dir=/models/pythia-160m
  (--config.model.base=pretrain pre-trains the small model below on the bundled corpus instead)
"""

from forgetting_jax.experiment import DEMO_TASKS, default_config


def get_config():
    config = default_config()
    config.name = "single_gpu_debug"
    # the architecture of a small model pre-trained with --config.model.base=pretrain (ignored with hf_dir)
    config.model.update(dict(hidden_size=512, num_layers=4, num_heads=8, num_kv_heads=8, head_dim=64, mlp_dim=1536,
                             max_position_embeddings=2048))
    config.mesh.update(dict(num_devices=1))
    config.data.update(dict(tasks=DEMO_TASKS[:4], max_length=256))  # the default source: the bundled suite
    config.train.update(dict(lr=1e-5, steps=100, row_length=256, eval_every=20, eval_rows=16))
    config.pretrain.update(dict(steps=500, warmup_steps=50, batch_size=32, micro_rows=32, row_length=512,
                                log_every=50))
    config.matrix.update(dict(num_upstream=500, max_length=256))
    config.replay.update(dict(test_tasks=("divide", "palindrome", "to_hex", "time_24h"), num_heldout=100))
    return config
