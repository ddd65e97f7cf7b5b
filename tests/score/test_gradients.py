"""Per-example loss gradients (score/gradients.py): equal to transformers' per-example gradients of a
tiny random llama; the projection of an example does not depend on its batch, its position, the
rows per call or the mesh; projected inner products approximate the exact ones (JL)."""

import jax
import numpy as np
import pytest
import torch

from forgetting_jax.models.hf_checkpoint import load_hf_model, params_to_tensors
from forgetting_jax.score.gradients import block_size, projected_gradients, projection_spec, unflatten
from forgetting_jax.score.scorer import Scorer, data_mesh
from tiny_hf import make_tiny_model

VOCAB = 128
ROWS = 4  # rows per call of the one-device passes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(transformers model, our config, our float32 params) of a tiny random 2-layer llama."""
    out = str(tmp_path_factory.mktemp("tiny_llama"))
    model = make_tiny_model("llama", out, vocab_size=VOCAB, hidden_size=32, layers=2)
    config, params, _ = load_hf_model(out)
    return model, config, params


def examples(seed, n, max_len=50):
    """n (ids, mask) pairs: lm examples (every token after the first scored) and chat examples (a
    scored trailing response); the first has a single scored token."""
    rng = np.random.default_rng(seed)
    out = [(np.array([5, 7], np.int32), np.array([False, True]))]
    for _ in range(n - 1):
        length = int(rng.integers(3, max_len))
        ids = rng.integers(0, VOCAB, length).astype(np.int32)
        mask = np.ones(length, bool) if rng.random() < 0.5 else np.arange(length) >= rng.integers(1, length)
        mask[0] = False
        out.append((ids, mask))
    return out


def torch_gradient(model, ids, mask) -> dict[str, np.ndarray]:
    """transformers' gradient of the example's mean NLL over its scored tokens, by name."""
    model.zero_grad()
    logits = model(input_ids=torch.as_tensor(ids[None], dtype=torch.long)).logits[0].float()
    logp = torch.log_softmax(logits, -1)[:-1].gather(1, torch.as_tensor(ids[1:], dtype=torch.long)[:, None])[:, 0]
    weights = torch.as_tensor(mask[1:], dtype=torch.float32)
    (-(logp * weights).sum() / weights.sum()).backward()
    return {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def exact(tiny):
    """(8 examples, the last without a scored token; their unprojected gradients [8, G]) with a
    Scorer on one device, 4 rows per call: the shape [4, 64] the other one-device passes share."""
    _, config, params = tiny
    pairs = examples(0, 7)
    ids = np.arange(3, 20, dtype=np.int32)
    pairs.append((ids, np.zeros(len(ids), bool)))
    return pairs, projected_gradients(Scorer(config, params), None, pairs, None, rows_per_batch=ROWS)



def test_unprojected_gradients_equal_transformers(tiny, exact):
    model, config, params = tiny
    pairs, flat = exact
    assert flat.shape == (len(pairs), sum(np.size(x) for x in jax.tree.leaves(params)))
    for (ids, mask), ours in zip(pairs[:-1], flat):
        ours = params_to_tensors(config, unflatten(ours, params))
        theirs = torch_gradient(model, ids, mask)
        assert set(ours) == set(theirs)
        for name, g in theirs.items():
            scale = max(float(np.abs(g).max()), 1e-3)
            np.testing.assert_allclose(ours[name], g, atol=2e-5 * scale, rtol=1e-3, err_msg=name)
        assert max(float(np.abs(g).max()) for g in theirs.values()) > 1e-2  # gradients that tell something
    assert not flat[-1].any()  # no scored token: loss 0, gradient 0


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


JL_DIM = 8192  # large for JL, and blocks of 4096 coordinates: two for the largest leaves


@pytest.fixture(scope="module")
def projected(tiny, exact):
    """{kind: the examples' projections [8, JL_DIM]}, 4 rows per call on one device."""
    _, config, params = tiny
    pairs, _ = exact
    return {kind: projected_gradients(config, params, pairs, JL_DIM, kind=kind, rows_per_batch=ROWS)
            for kind in ("rademacher", "countsketch")}


@pytest.mark.parametrize("kind", ["rademacher", "countsketch"])
def test_projection_does_not_depend_on_batch_position_rows_or_mesh(tiny, exact, projected, kind):
    _, config, params = tiny
    pairs, _ = exact
    forward = projected[kind]
    backward = projected_gradients(config, params, pairs[::-1], JL_DIM, kind=kind, rows_per_batch=ROWS)
    alone = projected_gradients(config, params, pairs[2:3], JL_DIM, kind=kind, rows_per_batch=ROWS)
    _close(backward[::-1], forward)
    _close(alone[0], forward[2])
    other_seed = projected_gradients(config, params, pairs[2:3], JL_DIM, seed=1, kind=kind, rows_per_batch=ROWS)
    assert np.abs(other_seed - alone).max() > 0.1 * np.abs(alone).max()
    if kind == "countsketch":  # 8 rows per call, one per device of tests/conftest.py's 8 virtual devices
        # (the kinds share the keys and the sharding; each device draws every block's random words,
        # which for rademacher's P/32 words per coordinate costs 8 times its one-device run here)
        mesh = data_mesh()
        assert mesh is not None and mesh.shape["data"] == 8
        _close(projected_gradients(config, params, pairs, JL_DIM, kind=kind, mesh=mesh), forward)


@pytest.mark.parametrize("kind", ["rademacher", "countsketch"])
def test_projected_inner_products_approximate_exact_ones(tiny, exact, projected, kind):
    """JL: each projected inner product within 6 standard deviations, sqrt((|g|^2|h|^2 +
    <g,h>^2) / P) (countsketch: at most that times sqrt(2)), of the exact one; a wrong scale,
    correlated signs or a lost leaf fail."""
    _, config, params = tiny
    pairs, flat = exact
    sizes = [np.size(x) for x in jax.tree.leaves(params)]
    assert any(s > block_size(JL_DIM) and s % block_size(JL_DIM) for s in sizes)  # several blocks, a short last
    projected = projected[kind]
    exact_products = flat.astype(np.float64) @ flat.T.astype(np.float64)
    estimated = projected.astype(np.float64) @ projected.T.astype(np.float64)
    norms = np.diag(exact_products)
    sigma = np.sqrt((norms[:, None] * norms[None, :] + exact_products ** 2) / JL_DIM)
    sigma *= np.sqrt(2.0) if kind == "countsketch" else 1.0
    error = np.abs(estimated - exact_products)
    assert (error <= 6 * sigma).all(), error / np.maximum(sigma, 1e-30)
    assert error.max() > 0 and not projected[-1].any()  # a projection, not the identity; zero stays zero


def test_projection_spec_names_the_projection():
    spec = projection_spec(1024, 3, "rademacher")
    assert spec["dim"] == 1024 and spec["seed"] == 3 and spec["kind"] == "rademacher" and spec["block"] == 32768
    assert projection_spec(1024, 0, "countsketch") != projection_spec(1024, 0)
    with pytest.raises(ValueError, match="not one of"):
        projection_spec(8, 0, "gaussian")
