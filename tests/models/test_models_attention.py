"""The cuDNN packed layout stands for exactly the XLA mask; the kernel choice on this backend."""

import jax.numpy as jnp
import numpy as np
import pytest

from forgetting_jax.data.packing import first_fit_decreasing, materialize_rows
from forgetting_jax.models import attention
from forgetting_jax.models.config import ConfigError, ModelConfig

CONFIG = ModelConfig(family="llama", vocab_size=97, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64, dtype="bfloat16")


def packed_segment_ids(seed, rows=6, length=64, max_segments=8):
    rng = np.random.default_rng(seed)
    examples = [(np.ones(n, np.int32), np.ones(n, bool)) for n in rng.integers(1, 40, 30)]
    packed = first_fit_decreasing([len(ids) for ids, _ in examples], length, max_segments)[:rows]
    return materialize_rows(examples, packed, length, max_segments, num_rows=rows).segment_ids


@pytest.mark.parametrize("seed", [0, 1])
def test_runs_layout_equals_the_segment_mask(seed):
    segment_ids = jnp.asarray(packed_segment_ids(seed))
    lengths, starts, num_runs = attention.segment_runs(segment_ids, max_runs=10)
    assert lengths.shape == (6, 10) and starts.shape == (6, 11)
    assert int(num_runs.max()) <= 10
    expected = attention.attention_mask(segment_ids, None, None)
    np.testing.assert_array_equal(attention.runs_mask(lengths, starts, 64), expected)
    lengths, starts = np.asarray(lengths), np.asarray(starts)
    for row, n in enumerate(np.asarray(num_runs)):
        assert (lengths[row, :n] > 0).all() and (lengths[row, n:] == -1).all() and (starts[row, n:] == -1).all()
        assert lengths[row, :n].sum() == 64 and starts[row, 0] == 0


def test_rows_with_more_runs_than_the_bound_are_counted():
    segment_ids = jnp.asarray(np.repeat(np.arange(1, 17), 4)[None])  # 16 runs of 4 tokens
    _, _, num_runs = attention.segment_runs(segment_ids, max_runs=8)
    assert int(num_runs[0]) == 16


def test_kernel_choice_on_this_backend():
    assert attention.resolve(CONFIG) == "xla"  # auto off GPUs
    assert attention.resolve(CONFIG.replace(attention_impl="xla")) == "xla"
    assert attention.resolve(CONFIG.replace(attention_impl="cudnn", sliding_window=16)) == "xla"
    with pytest.raises(ValueError, match="cudnn cannot run here"):
        attention.resolve(CONFIG.replace(attention_impl="cudnn"))
    with pytest.raises(ConfigError, match="attention_impl"):
        CONFIG.replace(attention_impl="flash")


def test_the_cudnn_check_runs_outside_any_trace_and_survives_any_failure(monkeypatch, caplog):
    """The check may first be asked while a step is traced (jit, eval_shape): its own arrays must
    be concrete (cuDNN's call takes no closed-over constants), and whatever it raises, even an
    exception without a message, means XLA attention, never a crash."""
    import jax

    seen = {}

    def fake_probe(num_heads, num_kv_heads, head_dim, dtype):
        value = jnp.zeros(3) + 1
        seen["traced"] = isinstance(value, jax.core.Tracer)
        raise AssertionError()  # what jax 0.11's custom_partitioning raised: no message at all

    monkeypatch.setattr(attention, "_probe", fake_probe)
    attention.probe.cache_clear()
    try:
        def step(x):
            assert attention.probe(4, 2, 8, "bfloat16") is False
            return x + 1

        jax.jit(step)(jnp.ones(2))
        assert seen == {"traced": False}
        assert "AssertionError" in caplog.text and "using XLA attention" in caplog.text
    finally:
        attention.probe.cache_clear()
