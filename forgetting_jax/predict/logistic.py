"""`logistic`: logistic matrix factorization of a binary forgetting matrix (lost answers).

Model of the training rows (tasks i, examples j; entries 0/1, NaN missing):

    P(D[i, j] = 1) = sigmoid(mu + a_i + b_j + u_i . v_j)      u_i, v_j in R^r

fitted on the Bernoulli negative log-likelihood of the observed entries plus an L2 penalty
`l2` charged once per observed entry on the parameters it touches,

    sum_{(i, j) observed} [ nll_ij + l2 (a_i^2 + b_j^2 + |u_i|^2 + |v_j|^2) ],

divided by the entry count, by full-batch Adam in one jitted `lax.scan` of `steps` steps.

The code of the paper's first version (INK-USC/lm-forgetting-prediction-code,
src/run_matrix_completion.py) has no logistic factorization: its factorization is surprise's SVD
(biased: mu + b_u + b_i + q_i . p_u, squared error, reg_all = 0.02 applied at every visit of a
rating, factors drawn from N(0, 0.1), 100 SGD epochs, 100 factors). The final code
(AuCson/low-rank-forgetting) fits logistic factorizations, `lgmf` and `lgmf_additive`
(predict/lgmf.py: logits W H, or a row plus a column term, refitted for every test row).
`logistic` is this project's own model, kept beside them: biased, rank 5, fitted once, test rows
folded in by MAP (below). It keeps the SVD's form -- the biases, the per-entry regularisation
(which keeps one `l2` right for matrices of any shape: a row of N entries and a column of M
entries are each held in proportion to their data) and the N(0, 0.1) start -- with the Bernoulli
likelihood in place of squared error, rank 5 (100 factors could not be folded in from k = 30
entries) and Adam for SGD.

A test row is folded in from its k observed entries: its parameters w = (a, u) with the column
parameters fixed, the maximum a posteriori estimate under a Gaussian prior fitted to the
training rows' (a_i, u_i) (mean and covariance, as the factor methods do), by Newton steps
(logistic regression with a Gaussian prior), vmapped over the batch of (test task, seed) pairs.

Predictions are probabilities in [0, 1], so they are scored against the 0/1 truth with threshold
0.5 (forgotten: p > 1/2). `comparison.threshold_for` picks 0.5 on a binary matrix when no
threshold is given (`forgetting-jax predict` without --threshold, config.predict.threshold None);
a direct `protocol.run_protocol` call must pass threshold=0.5 (its default, 0.0, is for forgetting
magnitudes).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict.methods import Batch


@dataclasses.dataclass(frozen=True)
class LogisticConfig:
    """Settings of the logistic factorization."""

    rank: int = 5
    l2: float = 0.01  # ridge on a, b, u, v per observed entry (surprise SVD's reg_all is 0.02)
    steps: int = 500  # Adam steps of the training fit
    lr: float = 0.05
    newton_steps: int = 20  # of each fold-in
    seed: int = 0


def is_binary(z_MxN: np.ndarray) -> bool:
    """True when every finite entry is 0 or 1 (and there is one)."""
    finite = np.asarray(z_MxN)[np.isfinite(z_MxN)]
    return bool(finite.size) and bool(np.isin(finite, (0.0, 1.0)).all())


def check_binary(name: str, train_MxN: np.ndarray) -> None:
    """ValueError naming method `name` unless the training rows are binary (is_binary)."""
    if not is_binary(train_MxN):
        finite = train_MxN[np.isfinite(train_MxN)]
        other = finite[~np.isin(finite, (0.0, 1.0))]
        found = f"other values, e.g. {float(other[0]):g}" if other.size else "no finite entry"
        raise ValueError(f"method {name} needs a binary matrix (every finite entry 0 or 1: "
                         f"matrix.metric=exact_match); its training rows have {found}")


def _loss(params, y_MxN, w_MxN, l2):
    logits = params["mu"] + params["a"][:, None] + params["b"][None, :] + params["u"] @ params["v"].T
    nll = optax.sigmoid_binary_cross_entropy(logits, y_MxN)
    # every observed entry charges l2 on its row's and its column's parameters (a row or column
    # with none is held at zero with weight one)
    n_M, n_N = jnp.maximum(w_MxN.sum(1), 1.0), jnp.maximum(w_MxN.sum(0), 1.0)
    penalty = ((n_M * (jnp.square(params["a"]) + jnp.square(params["u"]).sum(1))).sum()
               + (n_N * (jnp.square(params["b"]) + jnp.square(params["v"]).sum(1))).sum())
    return ((nll * w_MxN).sum() + l2 * penalty) / jnp.maximum(w_MxN.sum(), 1.0)


def fit_logistic(y_MxN: jax.Array, w_MxN: jax.Array, config: LogisticConfig) -> dict:
    """Parameters {mu, a [M], b [N], u [M, r], v [N, r]} of the rows weighted by w (0: missing)."""
    m, n = y_MxN.shape
    ku, kv = jax.random.split(jax.random.key(config.seed))
    rate = jnp.clip(jnp.sum(y_MxN * w_MxN) / jnp.maximum(w_MxN.sum(), 1.0), 1e-4, 1 - 1e-4)
    params = {"mu": jnp.log(rate / (1 - rate)), "a": jnp.zeros(m), "b": jnp.zeros(n),
              "u": 0.1 * jax.random.normal(ku, (m, config.rank)), "v": 0.1 * jax.random.normal(kv, (n, config.rank))}
    optimizer = optax.adam(config.lr)

    def step(carry, _):
        params, state = carry
        grads = jax.grad(_loss)(params, y_MxN, w_MxN, config.l2)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=config.steps)
    return params


_fit = jax.jit(fit_logistic, static_argnums=2)


def row_prior(params: dict, rows_M: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean [r + 1] and precision [r + 1, r + 1] of the training rows' (a_i, u_i)."""
    w_MxD = jnp.concatenate([params["a"][:, None], params["u"]], axis=1)
    keep = rows_M.astype(jnp.float32)[:, None]
    n = jnp.maximum(keep.sum(), 1.0)
    mean = (w_MxD * keep).sum(0) / n
    dev = (w_MxD - mean[None, :]) * keep
    d = w_MxD.shape[1]
    cov = dev.T @ dev / jnp.maximum(n - 1.0, 1.0)
    cov = cov + (1e-3 * jnp.trace(cov) / d + 1e-4) * jnp.eye(d)
    return mean, jnp.linalg.inv(cov)


def fold_in(params: dict, prior: tuple, obs_idx_K: jax.Array, obs_val_K: jax.Array, steps: int) -> jax.Array:
    """MAP (a, u) [r + 1] of one new row from its observed entries (Newton steps)."""
    mean, precision = prior
    x_KxD = jnp.concatenate([jnp.ones((obs_idx_K.shape[0], 1)), params["v"][obs_idx_K]], axis=1)
    offset_K = params["mu"] + params["b"][obs_idx_K]

    def newton(w_D, _):
        p_K = jax.nn.sigmoid(offset_K + x_KxD @ w_D)
        grad = x_KxD.T @ (p_K - obs_val_K) + precision @ (w_D - mean)
        hess = (x_KxD * (p_K * (1 - p_K))[:, None]).T @ x_KxD + precision
        return w_D - jnp.linalg.solve(hess, grad), None

    w_D, _ = jax.lax.scan(newton, mean, None, length=steps)
    return w_D


def _complete(params, prior, obs_idx_BxK, obs_val_BxK, steps):
    w_BxD = jax.vmap(fold_in, in_axes=(None, None, 0, 0, None))(params, prior, obs_idx_BxK, obs_val_BxK, steps)
    logits_BxN = params["mu"] + params["b"][None, :] + w_BxD[:, :1] + w_BxD[:, 1:] @ params["v"].T
    return jax.nn.sigmoid(logits_BxN)


_complete_jit = jax.jit(_complete, static_argnums=4)


class LogisticMethod:
    """The protocol's interface (predict/methods.py) for the logistic factorization."""

    name = "logistic"

    def __init__(self, config: LogisticConfig = LogisticConfig()):
        self.config = config

    def fit(self, chunks: ColumnChunks) -> Any:
        rows = np.asarray(chunks.rows_M)
        check_binary(self.name, np.asarray(chunks.z_MxN)[rows])
        w = np.isfinite(chunks.z_MxN) & rows[:, None]
        y = np.where(w, chunks.z_MxN, 0.0)
        params = _fit(jnp.asarray(y, jnp.float32), jnp.asarray(w, jnp.float32), self.config)
        return params, row_prior(params, jnp.asarray(rows))

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        params, prior = state
        return _complete_jit(params, prior, batch.obs_idx_BxK, batch.obs_val_BxK, int(self.config.newton_steps))
