"""The train step: sharding-invariant, packing-invariant, transformers' loss and schedule, LoRA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from forgetting_jax.data.packing import first_fit_decreasing, materialize_rows
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import param_shapes
from forgetting_jax.models.hf_checkpoint import load_hf_model
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train import lora as lora_lib
from forgetting_jax.train.mesh import make_mesh, mesh_shape
from forgetting_jax.train.optimizer import OptimizerSettings, learning_rate_schedule
from forgetting_jax.train.step import BATCH_FIELDS, StepSettings, compiled_steps, loss_sums
from tiny_hf import make_tiny_model

CONFIG = ModelConfig(family="llama", vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64)
SETTINGS = StepSettings(micro_batches=3, micro_rows=4, row_length=32,
                        optimizer=OptimizerSettings(lr=1e-2, steps=10, warmup_steps=1), eval_rows=4)


def host_params(seed=0):
    """Random parameters as numpy arrays (every device_put makes a fresh, donatable copy)."""
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        if path[-1].key == "scale":
            return 1.0 + 0.1 * noise
        return noise * np.float32(shape.shape[-2 if len(shape.shape) > 2 else -1] ** -0.5)

    return jax.tree_util.tree_map_with_path(leaf, param_shapes(CONFIG))


def make_examples(n, seed=0, vocab=128):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(6, 16))
        ids = rng.integers(0, vocab, length).astype(np.int32)
        mask = np.zeros(length, bool)
        mask[length // 2:] = True  # a "response" after a "prompt"
        out.append((ids, mask))
    return out


def as_batch(examples, rows, settings=SETTINGS):
    packed = materialize_rows(examples, rows, settings.row_length, 8,
                              num_rows=settings.micro_batches * settings.micro_rows)
    return {k: getattr(packed, k).reshape(settings.micro_batches, settings.micro_rows, -1) for k in BATCH_FIELDS}


def run_steps(mesh, batch, steps=3):
    compiled = compiled_steps(CONFIG, SETTINGS, mesh)
    state = compiled.init_state(jax.device_put(host_params(), compiled.trainable_shardings))
    device_batch = jax.device_put(batch, {k: compiled.batch_sharding for k in batch})
    losses = []
    for _ in range(steps):
        state, metrics = compiled.train_step(state, {}, device_batch)
        losses.append(float(metrics["loss"]))
    return np.array(losses), state, compiled


def test_mesh_shape_fills_one_axis():
    assert mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
    assert mesh_shape({"data": 1, "fsdp": -1}, 8) == (1, 8, 1)
    with pytest.raises(ValueError):
        mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError):
        mesh_shape({"data": 3}, 8)


@pytest.mark.slow
def test_sharded_run_matches_one_device_and_checkpoint_moves_between_meshes(tmp_path):
    examples = make_examples(10)
    batch = as_batch(examples, [[i] for i in range(10)])
    one = make_mesh({"data": 1}, jax.devices()[:1])
    eight = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    losses_one, state_one, compiled_one = run_steps(one, batch)
    losses_eight, state_eight, compiled_eight = run_steps(eight, batch)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5)
    assert losses_one[-1] < losses_one[0]
    kernel = state_eight.params["layers"]["attn"]["q"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(state_one.params["layers"]["attn"]["q"]["kernel"]),
                               rtol=1e-4, atol=1e-6)

    # Saved from the 8-device mesh, restored onto one device (and back), unchanged.
    saver = ckpt_lib.RunCheckpoints(str(tmp_path / "run"), select_best=False)
    saver.save(3, state_eight, {"note": "x"})
    saver.wait()
    restored, meta = saver.restore(3, compiled_one.abstract_state)
    saver.close()
    assert meta == {"note": "x"} and int(restored.step) == 3
    assert restored.params["embedding"].sharding.num_devices == 1
    for a, b in zip(jax.tree.leaves(restored.as_dict()), jax.tree.leaves(state_eight.as_dict())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt_lib.save_params(str(tmp_path / "params"), restored.params)
    back = ckpt_lib.restore_params(str(tmp_path / "params"), ckpt_lib.abstract_tree(
        jax.eval_shape(lambda: restored.params), compiled_eight.trainable_shardings))
    assert back["lm_head"].sharding.spec == compiled_eight.trainable_shardings["lm_head"].spec


def test_packed_and_unpacked_batches_give_the_same_loss():
    """Six examples packed into the rows of micro-batch 0, or one per row over two micro-batches."""
    examples = make_examples(6, seed=1)
    packed_rows = first_fit_decreasing([len(ids) for ids, _ in examples], SETTINGS.row_length, 8)
    assert 1 < len(packed_rows) <= SETTINGS.micro_rows  # all in micro-batch 0
    one = make_mesh({"data": 1}, jax.devices()[:1])
    packed_losses, packed_state, _ = run_steps(one, as_batch(examples, packed_rows), steps=2)
    unpacked_losses, unpacked_state, _ = run_steps(one, as_batch(examples, [[i] for i in range(6)]), steps=2)
    np.testing.assert_allclose(packed_losses, unpacked_losses, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(packed_state.params["embedding"]),
                               np.asarray(unpacked_state.params["embedding"]), rtol=1e-4, atol=1e-6)


def test_loss_is_the_masked_token_mean_transformers_computes(tmp_path):
    model = make_tiny_model("llama", str(tmp_path), vocab_size=128, hidden_size=32)
    config, params, _ = load_hf_model(str(tmp_path))
    examples = make_examples(3, seed=2)
    rows = first_fit_decreasing([len(ids) for ids, _ in examples], 48, 8)
    packed = materialize_rows(examples, rows, 48, 8)
    batch = {k: jnp.asarray(getattr(packed, k)) for k in BATCH_FIELDS}
    nll_sum, count = jax.jit(lambda p, b: loss_sums(config, p, b))(params, batch)
    ours = float(nll_sum / count)

    longest = max(len(ids) for ids, _ in examples)
    input_ids = torch.zeros((3, longest), dtype=torch.long)
    attention = torch.zeros((3, longest), dtype=torch.long)
    labels = torch.full((3, longest), -100, dtype=torch.long)
    for i, (ids, mask) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.as_tensor(ids)
        attention[i, :len(ids)] = 1
        labels[i, :len(ids)] = torch.where(torch.as_tensor(mask), torch.as_tensor(ids, dtype=torch.long), -100)
    with torch.no_grad():
        theirs = float(model(input_ids=input_ids, attention_mask=attention, labels=labels).loss)
    assert int(count) == sum(int(mask[1:].sum()) for _, mask in examples)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_schedule_is_transformers_linear_warmup_then_decay():
    settings = OptimizerSettings(lr=2e-6, steps=50, warmup_steps=10)
    ours = learning_rate_schedule(settings)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-6)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 10, 50)
    for step in range(50):
        np.testing.assert_allclose(float(ours(step)), optimizer.param_groups[0]["lr"], rtol=1e-6, atol=1e-15)
        optimizer.step()
        scheduler.step()


def test_lora_starts_at_the_base_model_and_merges_exactly():
    settings = lora_lib.LoraSettings(rank=4, alpha=8.0, dropout=0.1)
    params = host_params()
    factors, seeds = lora_lib.init_lora(CONFIG, settings, jax.random.key(1))
    assert set(factors["layers"]["attn"]) == {"q", "k", "v", "o"}
    assert not np.any(np.asarray(factors["layers"]["mlp"]["down"]["lora_b"]))
    batch = {k: jnp.asarray(v[0]) for k, v in as_batch(make_examples(4), [[0, 1], [2, 3]]).items()}

    @jax.jit
    def loss(base, factors):
        with lora_lib.lora_branches(settings, None):
            nll, count = loss_sums(CONFIG, lora_lib.attach(base, factors, seeds), batch)
        return nll / count

    rng = np.random.default_rng(2)
    trained = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.normal(size=x.shape).astype(np.float32), factors)
    untrained = float(loss(params, factors))
    adapted = float(loss(params, trained))
    merged = float(loss(lora_lib.merge(params, trained, settings), factors))  # merged kernels, zero branch
    assert float(loss(lora_lib.merge(params, factors, settings), factors)) == pytest.approx(untrained, rel=1e-6)
    assert adapted != pytest.approx(untrained, rel=1e-4)
    assert merged == pytest.approx(adapted, rel=1e-5)
