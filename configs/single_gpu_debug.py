"""Fast feedback on one GPU: any small Hugging Face model, a few demo tasks, the paper's batch of
8 examples, short runs with frequent validation and logging.

  forgetting-jax finetune --config=configs/single_gpu_debug.py --workdir=W --task=add \\
      --config.model.hf_dir=/models/pythia-160m
  (--config.model.base=pretrain pre-trains the small model below on the bundled corpus instead)
"""

from forgetting_jax.train.settings import DEMO_TASKS, default_config


def get_config():
    config = default_config()
    config.name = "single_gpu_debug"
    config.model.update(dict(base="hf", family="llama", hidden_size=512, num_layers=4, num_heads=8, num_kv_heads=8,
                             head_dim=64, mlp_dim=1536, max_position_embeddings=2048, dtype="bfloat16"))
    config.mesh.update(dict(data=-1, num_devices=1))
    config.data.update(dict(source="demo", tasks=DEMO_TASKS[:4], max_length=256))
    config.train.update(dict(lr=1e-5, steps=100, warmup_steps=10, batch_size=8, row_length=256, micro_rows=1,
                             eval_every=20, eval_rows=16, log_every=10))
    config.pretrain.update(dict(lr=1e-3, steps=500, warmup_steps=50, batch_size=32, micro_rows=32, row_length=512,
                                weight_decay=0.01, log_every=50))
    config.matrix.update(dict(upstream="demo", num_upstream=500, max_length=256))
    config.replay.update(dict(test_tasks=("divide", "palindrome", "to_hex", "time_24h"), num_heldout=100))
    return config
