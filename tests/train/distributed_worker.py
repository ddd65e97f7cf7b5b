"""One process of the multi-process test (test_train_distributed.py): scores examples and runs
train steps on a mesh over every device of every process, saves and restores the parameters
with orbax, and (process 0) writes what it computed to --out.

  python distributed_worker.py --out=R.npz --checkpoint=DIR [--num_processes=2 --process_id=i --port=P]

The caller sets JAX_PLATFORMS=cpu and the local device count (XLA_FLAGS).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    from forgetting_jax.utils.runtime import maybe_initialize

    if args.num_processes > 1:
        assert maybe_initialize({"mode": "auto", "coordinator_address": f"localhost:{args.port}",
                                 "num_processes": args.num_processes, "process_id": args.process_id,
                                 "initialization_timeout": 60})
    import jax
    from jax.experimental import multihost_utils

    from forgetting_jax.data.packing import first_fit_decreasing, materialize_rows
    from forgetting_jax.models.config import ModelConfig
    from forgetting_jax.models.decoder import init_params
    from forgetting_jax.score.scorer import Scorer, ScoreShape, data_mesh
    from forgetting_jax.train import checkpoints as ckpt_lib
    from forgetting_jax.train.batches import to_device
    from forgetting_jax.train.mesh import make_mesh
    from forgetting_jax.train.optimizer import OptimizerSettings
    from forgetting_jax.train.step import CompiledSteps, StepSettings

    assert jax.process_count() == args.num_processes and jax.device_count() == 4
    config = ModelConfig(family="llama", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         head_dim=8, mlp_dim=64)
    params = jax.tree.map(np.asarray, jax.jit(lambda key: init_params(config, key)[0])(jax.random.key(0)))
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(37):
        length = int(rng.integers(2, 40))
        mask = np.ones(length, bool)
        mask[0] = False
        examples.append((rng.integers(0, config.vocab_size, length).astype(np.int32), mask))

    # Scoring: rows split over all 4 devices, each process feeding its own.
    scorer = Scorer(config, params, mesh=data_mesh())
    nll, count, stats = scorer.score(examples, ScoreShape(rows_per_batch=4, row_length=48, max_segments=4))
    assert stats.examples == len(examples), stats
    mean, last, _ = scorer.represent(examples, ScoreShape(rows_per_batch=4, row_length=48, max_segments=4))

    # Training: parameters and optimizer state split over fsdp, rows over data x fsdp.
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 1})
    settings = StepSettings(micro_batches=2, micro_rows=4, row_length=48,
                            optimizer=OptimizerSettings(lr=3e-3, steps=10, warmup_steps=0))
    steps = CompiledSteps(config, settings, mesh)
    trainable = jax.tree.map(lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda i, x=x: x[i]),
                             params, steps.trainable_shardings)
    state = steps.init_state(trainable)
    losses = []
    for step in range(3):
        chosen = examples[8 * step: 8 * step + 8]
        rows = first_fit_decreasing([len(ids) for ids, _ in chosen], 48, 8)
        packed = materialize_rows(chosen, rows, 48, 8, num_rows=8)
        state, metrics = steps.train_step(state, {}, to_device(packed, steps.batch_sharding, 2))
        losses.append(float(metrics["loss"]))
    trained = multihost_utils.process_allgather(state.params, tiled=True)

    # Orbax: a collective save, then a restore onto the same mesh.
    ckpt_lib.save_params(args.checkpoint, state.params)
    restored = ckpt_lib.restore_params(args.checkpoint, ckpt_lib.abstract_tree(
        jax.eval_shape(lambda: state.params), steps.trainable_shardings))
    restored = multihost_utils.process_allgather(restored, tiled=True)
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(restored)))

    if jax.process_index() == 0:
        leaves = {f"param_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(trained))}
        np.savez(args.out, nll=nll, count=count, mean=mean, last=last, losses=np.asarray(losses), restored_equal=same,
                 processes=jax.process_count(), **leaves)


if __name__ == "__main__":
    main()
