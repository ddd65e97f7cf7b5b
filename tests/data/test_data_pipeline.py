"""Packed training batches: exact masks, coverage, seeded order, resumption, shards, prefetch."""

import threading

import numpy as np
import pytest

from forgetting_jax.data.pipeline import PackedBatches, PipelineConfig, Prefetcher
from forgetting_jax.data.records import Example


def make_examples(n=37, seed=0, max_len=20):
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        length = int(rng.integers(2, max_len + 1))
        ids = rng.integers(1, 500, size=length).astype(np.int32)
        mask = rng.random(length) < 0.6
        mask[0] = False
        examples.append(Example(f"e{i}", "t", ids, mask))
    return examples


def config(**kwargs):
    base = dict(batch_rows=4, row_length=32, max_segments=6, seed=5, num_epochs=2)
    return PipelineConfig(**{**base, **kwargs})


def check_exact(batch, examples, row_length):
    """Every segment holds its example's tokens, shifted targets and mask; padding is empty."""
    seen = []
    for r in range(batch.tokens.shape[0]):
        start = 0
        for s, e in enumerate(batch.example_index[r]):
            if e < 0:
                break
            ids, mask = examples[e].ids, examples[e].mask
            end = start + len(ids)
            np.testing.assert_array_equal(batch.tokens[r, start:end], ids)
            np.testing.assert_array_equal(batch.targets[r, start:end - 1], ids[1:])
            np.testing.assert_array_equal(batch.loss_mask[r, start:end - 1], mask[1:])
            assert not batch.loss_mask[r, end - 1] and batch.targets[r, end - 1] == 0
            np.testing.assert_array_equal(batch.segment_ids[r, start:end], s + 1)
            np.testing.assert_array_equal(batch.positions[r, start:end], np.arange(len(ids)))
            seen.append(int(e))
            start = end
        assert not batch.segment_ids[r, start:].any() and not batch.tokens[r, start:].any()
        assert not batch.loss_mask[r, start:].any() and not batch.positions[r, start:].any()
    return seen


def test_batches_have_fixed_shapes_exact_masks_and_cover_every_epoch():
    examples = make_examples()
    batches = PackedBatches(examples, config())
    assert batches.num_steps == -(-2 * batches.rows_per_epoch // 4)
    seen = []
    for batch in batches:
        assert batch.tokens.shape == (4, 32) and batch.example_index.shape == (4, 6)
        assert batch.tokens.dtype == np.int32 and batch.loss_mask.dtype == bool
        seen += check_exact(batch, examples, 32)
    assert sorted(seen) == sorted(list(range(len(examples))) * 2)
    assert int(sum(b.loss_mask.sum() for b in batches.iterate())) == 2 * sum(int(e.mask[1:].sum()) for e in examples)


def test_resuming_from_a_step_gives_the_same_batches():
    batches = PackedBatches(make_examples(), config(num_epochs=3))
    everything = list(batches.iterate(0))
    for start in (0, 1, batches.num_steps // 2, batches.num_steps - 1):
        resumed = list(PackedBatches(make_examples(), config(num_epochs=3)).iterate(start))
        assert len(resumed) == len(everything) - start
        for a, b in zip(resumed, everything[start:]):
            np.testing.assert_array_equal(a.tokens, b.tokens)
            np.testing.assert_array_equal(a.loss_mask, b.loss_mask)
            np.testing.assert_array_equal(a.example_index, b.example_index)
    np.testing.assert_array_equal(batches.batch(3).segment_ids, everything[3].segment_ids)


def test_order_is_seeded_and_epochs_differ():
    examples = make_examples()
    a = PackedBatches(examples, config(num_epochs=None))
    b = PackedBatches(examples, config(num_epochs=None))
    c = PackedBatches(examples, config(num_epochs=None, seed=6))
    steps = range(0, 3 * a.rows_per_epoch // 4)
    assert all(np.array_equal(a.batch(s).tokens, b.batch(s).tokens) for s in steps)
    assert not all(np.array_equal(a.batch(s).tokens, c.batch(s).tokens) for s in steps)
    stream = [i for s in range(-(-2 * a.rows_per_epoch // 4)) for i in a.row_indices(s)]
    epoch0, epoch1 = stream[: a.rows_per_epoch], stream[a.rows_per_epoch: 2 * a.rows_per_epoch]
    assert sorted(epoch0) == sorted(epoch1) == list(range(a.rows_per_epoch)) and epoch0 != epoch1


def test_repeats_forever_without_num_epochs():
    batches = PackedBatches(make_examples(n=5), config(num_epochs=None))
    assert batches.num_steps is None
    stream = batches.iterate(0)
    taken = [next(stream) for _ in range(10)]
    stream.close()
    assert all(b.tokens.shape == (4, 32) for b in taken)
    assert all((b.segment_ids > 0).any(axis=1).all() for b in taken)  # no padded rows mid-stream


def test_last_batch_is_padded_with_empty_rows():
    batches = PackedBatches(make_examples(n=9), config(num_epochs=1, batch_rows=8))
    last = batches.batch(batches.num_steps - 1)
    filled = (last.segment_ids > 0).any(axis=1)
    assert filled.sum() == batches.rows_per_epoch % 8 or filled.all()
    assert not last.loss_mask[~filled].any()
    with pytest.raises(IndexError):
        batches.batch(batches.num_steps)


def test_examples_as_pairs_and_too_long_examples():
    pairs = [(e.ids, e.mask) for e in make_examples(n=4)]
    assert PackedBatches(pairs, config()).rows_per_epoch >= 1
    with pytest.raises(ValueError, match="longer than the row length 32, e.g. 'e"):
        PackedBatches(make_examples(n=3, max_len=40), config())


def test_prefetcher_runs_ahead_passes_errors_and_stops():
    produced = []

    def numbers():
        for i in range(100):
            produced.append(i)
            yield i

    with Prefetcher(numbers(), size=3) as stream:
        assert [next(stream) for _ in range(5)] == list(range(5))
    assert len(produced) <= 5 + 3 + 2

    def failing():
        yield 1
        raise RuntimeError("bad shard")

    stream = Prefetcher(failing(), size=2)
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="bad shard"):
        next(stream)
    assert list(Prefetcher(iter(range(3)), 1)) == [0, 1, 2]
    assert threading.active_count() < 20
