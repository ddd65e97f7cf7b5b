"""The base model's projected gradients in the matrix file (matrix/gradients.py): a micro run with
matrix.gradient_dim > 0 writes example_gradients [N, P] and task_gradients [M, P] of the right
examples, cached by fingerprint (a second pass recomputes nothing; another P is another file)."""

import glob
import os

import numpy as np
import pytest

from forgetting_jax.matrix import gradients
from forgetting_jax.matrix.representations import represented_examples
from forgetting_jax.matrix.run import run_pipeline
from forgetting_jax.matrix.upstream import prepare_upstream
from forgetting_jax.score import gradients as score_gradients
from micro_demo import TASKS, copy_workspace, micro_experiment

DIM = 48


@pytest.fixture(scope="module")
def gradient_run(micro_matrix, tmp_path_factory):
    """(W, config, summary, calls): the micro matrix rerun with matrix.gradient_dim = DIM (rows,
    representations reused), every projected_gradients call recorded as (example ids, result)."""
    workdir = copy_workspace(micro_matrix[0], str(tmp_path_factory.mktemp("gradients") / "W"))
    config = micro_experiment(**{"matrix.gradient_dim": DIM})
    calls = []
    original = score_gradients.projected_gradients

    def recording(model, params, examples, dim, **kwargs):
        out = original(model, params, examples, dim, **kwargs)
        calls.append(([e.id for e in examples], out))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(score_gradients, "projected_gradients", recording)
        summary = run_pipeline(config, workdir, analyze=False)
    return workdir, config, summary, calls


def test_a_run_puts_the_gradients_of_its_examples_in_the_matrix_file(gradient_run):
    from forgetting_jax.train.finetune import plan_finetune

    workdir, config, summary, calls = gradient_run
    with np.load(summary.matrix_path) as npz:
        example_NxP, task_MxP, tasks = npz["example_gradients"], npz["task_gradients"], list(npz["tasks"])
    assert example_NxP.shape == (50, DIM) and task_MxP.shape == (len(TASKS), DIM) and tasks == list(TASKS)
    assert example_NxP.dtype == task_MxP.dtype == np.float32
    assert np.isfinite(example_NxP).all() and (np.abs(example_NxP).max(axis=1) > 0).all()

    up = prepare_upstream(config, workdir)
    assert len(calls) == 1 + len(TASKS)  # the upstream pass, then one per task
    ids, out = calls[0]
    assert ids == [e.id for e in up.examples]
    np.testing.assert_array_equal(out, example_NxP)
    s = int(config.matrix.task_examples)
    for i, task in enumerate(TASKS):
        chosen = represented_examples(plan_finetune(config, workdir, task, up.base).examples["train"], s)
        ids, out = calls[1 + i]
        assert ids == [e.id for e in chosen] and 0 < len(ids) <= s
        np.testing.assert_allclose(task_MxP[i], out.mean(0), rtol=1e-5, atol=1e-7)
    scores = gradients.gradient_products(task_MxP, example_NxP)
    assert scores.shape == (len(TASKS), 50)
    np.testing.assert_allclose(gradients.gradient_products(task_MxP[1], example_NxP), scores[1], rtol=1e-6)
    np.testing.assert_allclose(scores, task_MxP.astype(np.float64) @ example_NxP.T, rtol=1e-5)

    root = os.path.join(workdir, "matrix", "gradients")
    assert len(glob.glob(os.path.join(root, "upstream", "*.npz"))) == 1
    assert all(len(glob.glob(os.path.join(root, "tasks", task, "*.npz"))) == 1 for task in TASKS)


def test_a_second_pass_reads_the_cache_and_another_dim_is_another_file(gradient_run, monkeypatch):
    from forgetting_jax.train.finetune import plan_finetune

    workdir, config, summary, _ = gradient_run
    up = prepare_upstream(config, workdir)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached gradient")

    monkeypatch.setattr(score_gradients, "projected_gradients", fail)
    train = {task: plan_finetune(config, workdir, task, up.base).examples["train"] for task in TASKS}
    with up.base_weights() as weights:
        arrays = gradients.gradient_arrays(up, weights, list(TASKS), train, int(config.matrix.task_examples), DIM)
        assert weights._scorer is None  # all read from the cache: the base weights were never loaded
    with np.load(summary.matrix_path) as npz:
        for key in gradients.MATRIX_ARRAYS:
            np.testing.assert_array_equal(arrays[key], npz[key])

    store = gradients.GradientStore(up.store.root)
    fp = gradients.gradient_key(up, up.examples, DIM)
    assert os.path.isfile(store.upstream_path(fp))
    other = gradients.gradient_key(up, up.examples, 2 * DIM)
    assert other != fp and not os.path.exists(store.upstream_path(other))
    assert store.upstream(fp, len(up.examples), 2 * DIM) is None  # the wrong width reads as absent
    with up.base_weights() as weights, pytest.raises(AssertionError, match="recomputed"):
        gradients.upstream_gradients(up, weights, 2 * DIM)
