"""rep_dot: the trained representation-based forgetting forecaster of prior work (Jin & Ren, ICML
2024, "What Will My Model Forget? Forecasting Forgotten Examples in Language Model Refinement"),
with a frozen encoder (predict.rep_dot_encoder=frozen): the base model's representations from the
matrix file. With a trainable encoder (full, top:K) the same head and score train together with
the encoder: predict/rep_dot_training.py.

An example's raw representation is the encoder's final hidden state at its last token. One
two-layer head h = Linear(D, D) -> ReLU -> Linear(D, D_out) (D_out = 768, the paper's final code's),
shared by the task examples and the upstream examples (the reference applies the same head to
both sides), maps it to D_out dimensions; the score of a (task example a, upstream example u) pair is

    score(a, u) = -mean_d(h(a)_d * h(u)_d) / temperature,

and a task's predicted row is the mean of its examples' scores, pred[i, j] = mean_s score(a_is,
u_j) (as the score is linear in h(a), this is the score of the mean head output). The method
forecasts from representations alone: the k observed entries of a test row are not used.

Training (the reference's `rep_task_level` method, `sample_episode_task_level_balanced`):

- pairs are drawn evenly across training tasks: for each of `batch_tasks` batch elements, a task
  uniformly, one of its examples uniformly, then one forgotten (Z > 0) and one not-forgotten
  (Z <= 0) upstream example of that task's row, uniformly; a side the row lacks is skipped
  (weight 0). Missing (NaN / inf) entries are never drawn. Draws are index arithmetic on fixed
  shapes: each training row's columns are ordered forgotten, not forgotten, missing once, so a
  draw is one randint per side;
- loss: MSE of the score against Z for regression targets; for binary targets (all training
  entries 0 or 1, or `loss="bce"`, which binarises at Z > 0 as the reference does) BCE of
  sigmoid(score + b) against the label, with b = log(p / (1 - p)), p the positive rate of the
  training entries. The reference's `prior: odd` adds log(p) instead, which is the log-odds
  only when p is small; the log-odds is the bias under which a zero score predicts exactly the
  prior (`prior=True`; the default, False, adds none, as the final code's BCE does). For BCE the predicted row is
  the logit mean_s score + b (pred > 0: a forgetting probability above 1/2); on a binary matrix
  (loss auto) the protocol gets sigmoid of it, a probability it thresholds at 1/2;
- Adam (optax, the reference's torch defaults) on the head at `lr_head`; the reference trains the
  encoder at lr 1e-5 with the head at 10x that (lr_scale 10, head 1e-4) for 100k steps. With the
  encoder frozen and 5,000 steps the default head rate is 1e-3: on the demo matrix (24 tasks x
  2,000 examples, 7 held out) 2,000 steps at 1e-4 left the head near its initialisation (pooled
  RMSE 0.342, AUC 0.63), 10,000 at 1e-4 reached 0.187 (AUC 0.97) and 6,000 at 1e-3 0.180;
- the best step is chosen by F1 on held-out training tasks: a seeded `dev_fraction` of the
  usable training rows (at least 1, none when there are fewer than 2) is set aside and not
  trained on. Every `eval_every` steps (and at the last step) each dev task's predicted row > 0
  is compared with its Z row > 0 over its observed entries, F1 (0 when undefined, as
  scikit-learn) is averaged over dev tasks, and the head parameters of the best evaluation are
  kept (the first best on ties; no evaluation before training, as the reference's scripts run
  with --skip_first_eval). The reference selects on its test tasks; this one never sees them.

`seeds` independent heads (initial parameters and draws from PRNGKey(seed + s)) train together
under jax.vmap, each with its own best step; the predicted row is the mean over seeds, so
`seeds=2, seed=s` predicts the mean of the `seeds=1` models with seeds s and s + 1.

Raw hidden states of a language model have large, uneven scales, so by default
(`normalize_features`) every feature is standardised with the mean and standard deviation
computed over the training tasks' examples and the upstream examples pooled together (a feature
constant over them is left unscaled); the statistics use no forgetting values. Only the real
example slots of each task are read (padding slots may hold anything, NaN included).

Memory: the upstream features stay on the device ([N, D] float32); the head is applied to them
in blocks of `block_examples` rows, so the [N, D_out] outputs never materialise; the training
rows' column order and values take 8 bytes per training entry on the device.
"""

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.experiment import PredictSettings
from forgetting_jax.predict.methods import Batch

LOSSES = ("auto", "mse", "bce")


@dataclasses.dataclass(frozen=True)
class RepDotConfig:
    """Settings of rep_dot (frozen encoder)."""

    steps: int = PredictSettings.rep_dot_steps  # optimiser steps
    batch_tasks: int = 8  # task examples per step (each with a forgotten and a kept pair)
    lr_head: float = PredictSettings.rep_dot_lr  # Adam learning rate of the head (see the module docstring)
    temperature: float = 1.0
    output_dim: int | None = 768  # D_out of the head (the paper's final code); None = the feature dimension D
    eval_every: int = 100  # steps between dev evaluations
    dev_fraction: float = 0.2  # of the usable training rows, held out to choose the best step
    dev_seed: int = 0  # of the dev split
    loss: str = "auto"  # "auto" (bce when training entries are all 0/1), "mse" or "bce"
    prior: bool = False  # bce: add the log-odds of the training positive rate to the logit (the final code adds none)
    seeds: int = 1  # independent heads trained together (vmapped); predictions average them
    seed: int = 0  # head s starts from PRNGKey(seed + s)
    normalize_features: bool = True  # standardise raw features (statistics of training data)
    block_examples: int = 65536  # upstream examples per block of the head
    # A trainable encoder (predict/encoder.py, predict/rep_dot_training.py): what of it trains
    # ("frozen": nothing, the features of the matrix file), its learning rate, where the step is chosen.
    encoder: str = PredictSettings.rep_dot_encoder
    lr_encoder: float = PredictSettings.rep_dot_encoder_lr
    select: str = PredictSettings.rep_dot_select


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["params", "feature_mean_D", "feature_std_D", "bias", "prior",
                                "step_S", "best_f1_S", "eval_steps_E", "dev_f1_SxE",
                                "train_loss_SxE", "fit_rows", "dev_rows"],
                   meta_fields=["loss"])
@dataclasses.dataclass(frozen=True)
class RepDotState:
    """A fitted rep_dot: the kept head parameters and the record of their selection."""

    params: dict  # w1 [S, D, D], b1 [S, D], w2 [S, D, D_out], b2 [S, D_out]; S = seeds
    feature_mean_D: jax.Array  # standardisation of the raw features (0 / 1 when off)
    feature_std_D: jax.Array
    bias: jax.Array  # added to every score: log(p / (1 - p)) for bce with prior, else 0
    prior: jax.Array  # positive rate p of the trained entries (Z > 0)
    step_S: jax.Array  # step of each head's kept parameters (its best dev F1)
    best_f1_S: jax.Array  # their dev F1 (NaN without a dev set)
    eval_steps_E: jax.Array  # steps of the dev evaluations
    dev_f1_SxE: jax.Array  # dev F1 of each head at each evaluation
    train_loss_SxE: jax.Array  # mean training loss over the steps before each evaluation
    fit_rows: jax.Array  # matrix rows trained on
    dev_rows: jax.Array  # matrix rows of the dev set
    loss: str  # "mse" or "bce"


def init_head(key: jax.Array, d: int, d_out: int) -> dict:
    """torch.nn.Linear's initialisation: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    bound = 1.0 / math.sqrt(d)
    u = functools.partial(jax.random.uniform, minval=-bound, maxval=bound, dtype=jnp.float32)
    return {"w1": u(k1, (d, d)), "b1": u(k2, (d,)), "w2": u(k3, (d, d_out)), "b2": u(k4, (d_out,))}


def head(params: dict, x_BxD: jax.Array, mean_D: jax.Array, std_D: jax.Array) -> jax.Array:
    """Head outputs [B, D_out] of raw features [B, D]."""
    x = (x_BxD - mean_D[None, :]) / std_D[None, :]
    h = jax.nn.relu(x @ params["w1"] + params["b1"][None, :])
    return h @ params["w2"] + params["b2"][None, :]


def task_means(params: dict, ex_TxSxD: jax.Array, count_T: jax.Array, mean_D: jax.Array,
               std_D: jax.Array) -> jax.Array:
    """Mean head output [T, D_out] over each task's real example slots (0 for a task without)."""
    t, s, d = ex_TxSxD.shape
    real_TxS = jnp.arange(s)[None, :] < count_T[:, None]
    x = jnp.where(real_TxS[:, :, None], ex_TxSxD, 0.0).reshape(t * s, d)
    h = head(params, x, mean_D, std_D).reshape(t, s, -1)
    h = jnp.where(real_TxS[:, :, None], h, 0.0).sum(1)
    return h / jnp.maximum(count_T, 1).astype(jnp.float32)[:, None]


def _blocks(n: int, block: int):
    """Number of blocks and block size (the last block is clamped to end at n)."""
    c = int(min(block, n))
    nb = -(-n // c)
    return nb, c


def _block_start(b, n: int, c: int):
    return jnp.minimum(b * c, n - c)


def _scores_block(params_S, mean_D, std_D, hbar_SxTxE, example_NxD, start, c, temperature):
    """Mean over heads of the scores [T, C] of tasks against upstream examples start..start+C."""
    x = jax.lax.dynamic_slice_in_dim(example_NxD, start, c)
    h_SxCxE = jax.vmap(head, in_axes=(0, None, None, None))(params_S, x, mean_D, std_D)
    s, _, e = h_SxCxE.shape
    return -jnp.einsum("ste,sce->tc", hbar_SxTxE, h_SxCxE) / (s * e * temperature)


@functools.partial(jax.jit, static_argnames=("block",))
def predict_scores(params_S, mean_D, std_D, bias, ex_BxSxD, count_B, example_NxD, temperature, *,
             block):
    hbar = jax.vmap(task_means, in_axes=(0, None, None, None, None))(params_S, ex_BxSxD, count_B,
                                                                      mean_D, std_D)
    n = example_NxD.shape[0]
    nb, c = _blocks(n, block)

    def body(b, out):
        start = _block_start(b, n, c)
        scores = _scores_block(params_S, mean_D, std_D, hbar, example_NxD, start, c, temperature)
        return jax.lax.dynamic_update_slice_in_dim(out, scores + bias, start, axis=1)

    return jax.lax.fori_loop(0, nb, body, jnp.zeros((ex_BxSxD.shape[0], n), jnp.float32))


@functools.partial(jax.jit, static_argnames=("block",))
def heads_dev_f1(params_S, mean_D, std_D, bias, ex_VxSxD, count_V, z_VxN, example_NxD, temperature,
            *, block):
    """Dev F1 of each head [S]: per dev task, (pred > 0) vs (Z > 0) over observed entries."""

    def one(params):
        p1 = jax.tree_util.tree_map(lambda a: a[None], params)
        hbar = task_means(params, ex_VxSxD, count_V, mean_D, std_D)[None]
        n = example_NxD.shape[0]
        nb, c = _blocks(n, block)

        def body(b, acc):
            start = _block_start(b, n, c)
            pred = _scores_block(p1, mean_D, std_D, hbar, example_NxD, start, c,
                                 temperature) + bias
            z = jax.lax.dynamic_slice_in_dim(z_VxN, start, c, axis=1)
            fresh_C = start + jnp.arange(c) >= b * c  # the clamped last block overlaps
            valid = jnp.isfinite(z) & fresh_C[None, :]
            pos_true = valid & (z > 0)
            pos_pred = valid & (pred > 0)
            tp = (pos_true & pos_pred).sum(1)
            fp = (pos_pred & ~pos_true).sum(1)
            fn = (pos_true & ~pos_pred).sum(1)
            return acc + jnp.stack([tp, fp, fn]).astype(jnp.float32)

        tp, fp, fn = jax.lax.fori_loop(0, nb, body, jnp.zeros((3, ex_VxSxD.shape[0]),
                                                              jnp.float32))
        den = 2.0 * tp + fp + fn
        return jnp.where(den > 0, 2.0 * tp / jnp.where(den > 0, den, 1.0), 0.0).mean()

    return jax.vmap(one)(params_S)


def _sample(key, order_TxN, zs_TxN, pos_T, neg_T, count_T, batch):
    """One balanced draw: task-example index (t, s), upstream columns [2, B], targets, weights."""
    kt, ks, kp, kn = jax.random.split(key, 4)
    t = jax.random.randint(kt, (batch,), 0, order_TxN.shape[0])
    s = jax.random.randint(ks, (batch,), 0, jnp.maximum(count_T[t], 1))
    p, q = pos_T[t], neg_T[t]
    ip = jax.random.randint(kp, (batch,), 0, jnp.maximum(p, 1))
    iq = p + jax.random.randint(kn, (batch,), 0, jnp.maximum(q, 1))
    idx = jnp.stack([ip, iq])
    cols = order_TxN[t[None, :], idx]
    w = jnp.stack([p > 0, q > 0])
    y = jnp.where(w, zs_TxN[t[None, :], idx], 0.0)
    return t, s, cols, y, w.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("batch", "length", "loss"))
def _train_chunk(params_S, opt_S, keys_S, step0, steps, data, example_NxD, mean_D, std_D, bias,
                 temperature, lr, *, batch, length, loss):
    """`length` steps of every head (steps at or past `steps` leave it unchanged)."""
    order_TxN, zs_TxN, pos_T, neg_T, count_T, ex_TxSxD = data
    opt = optax.adam(lr)

    def loss_fn(params, t, s, cols, y, w):
        h_a = head(params, ex_TxSxD[t, s], mean_D, std_D)  # [B, E]
        h_u = head(params, example_NxD[cols.reshape(-1)], mean_D, std_D).reshape(2, batch, -1)
        score = -jnp.mean(h_a[None] * h_u, -1) / temperature  # [2, B]
        if loss == "bce":
            per = optax.sigmoid_binary_cross_entropy(score + bias, y)
        else:
            per = (score - y) ** 2
        return (w * per).sum() / jnp.maximum(w.sum(), 1.0)

    def one_head(params, opt_state, key):
        def step(carry, i):
            params, opt_state = carry
            k = jax.random.fold_in(key, step0 + i)
            value, grads = jax.value_and_grad(loss_fn)(
                params, *_sample(k, order_TxN, zs_TxN, pos_T, neg_T, count_T, batch))
            updates, new_opt = opt.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            active = step0 + i < steps
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            carry = (jax.tree_util.tree_map(keep, new_params, params),
                     jax.tree_util.tree_map(keep, new_opt, opt_state))
            return carry, (value, active)

        (params, opt_state), (values, active) = jax.lax.scan(step, (params, opt_state),
                                                             jnp.arange(length))
        mean_loss = jnp.where(active, values, 0.0).sum() / jnp.maximum(active.sum(), 1)
        return params, opt_state, mean_loss

    return jax.vmap(one_head)(params_S, opt_S, keys_S)


@jax.jit
def _keep_best(best_params, best_f1, best_step, params, f1, step):
    better = f1 > best_f1
    pick = lambda new, old: jnp.where(  # noqa: E731
        better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return (jax.tree_util.tree_map(pick, params, best_params), jnp.where(better, f1, best_f1),
            jnp.where(better, step, best_step))


@jax.jit
def _feature_stats(ex_MxSxD, count_M, rows_M, example_NxD):
    """Mean and std [D] over training tasks' real examples and upstream examples pooled."""
    real = (jnp.arange(ex_MxSxD.shape[1])[None, :] < count_M[:, None]) & rows_M[:, None]
    n = real.sum().astype(jnp.float32) + example_NxD.shape[0]
    mean = (jnp.where(real[:, :, None], ex_MxSxD, 0.0).sum((0, 1)) + example_NxD.sum(0)) / n
    dev_t = jnp.where(real[:, :, None], ex_MxSxD - mean[None, None, :], 0.0)
    dev_u = example_NxD - mean[None, :]
    var = ((dev_t * dev_t).sum((0, 1)) + (dev_u * dev_u).sum(0)) / n
    std = jnp.sqrt(var)
    return mean, jnp.where(std > 1e-6 * jnp.maximum(jnp.abs(mean), 1.0), std, 1.0)


class RepDot:
    """rep_dot with a frozen encoder, from precomputed last-token final hidden states.

    `task_example_MxSxD`: up to S examples of each task (the rows of the matrix), of which the
    first `task_example_count_M[i]` slots are real (the rest is padding, never read);
    `example_NxD`: one per upstream example (the columns). A task without examples is predicted
    as the bias alone (0 for MSE, the prior's log-odds for BCE). Training rows without examples
    or without observed entries are left out of both the training and the dev set.
    """

    name = "rep_dot"

    def __init__(self, task_example_MxSxD: np.ndarray, task_example_count_M: np.ndarray,
                 example_NxD: np.ndarray, config: RepDotConfig = RepDotConfig()):
        ex = np.asarray(task_example_MxSxD)
        count = np.asarray(task_example_count_M)
        up = np.asarray(example_NxD)
        if ex.ndim != 3 or up.ndim != 2 or ex.shape[2] != up.shape[1]:
            raise ValueError(f"expected task examples [M, S, D] and upstream examples [N, D], "
                             f"got {ex.shape} and {up.shape}")
        if count.shape != (ex.shape[0],) or not np.issubdtype(count.dtype, np.integer):
            raise ValueError(f"task_example_count_M must be integers of shape ({ex.shape[0]},), "
                             f"got {count.dtype} {count.shape}")
        if (count < 0).any() or (count > ex.shape[1]).any():
            raise ValueError(f"example counts must lie in [0, {ex.shape[1]}]")
        if config.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {config.loss!r}")
        if config.steps < 1 or config.eval_every < 1 or config.batch_tasks < 1 or config.seeds < 1:
            raise ValueError("steps, eval_every, batch_tasks and seeds must be positive")
        if not 0.0 <= config.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1), got {config.dev_fraction}")
        self.config = config
        self.count_M = jnp.asarray(count, jnp.int32)
        real = np.arange(ex.shape[1])[None, :] < count[:, None]
        # Padding slots are zeroed once so that nothing downstream can pick up their contents.
        self.task_example_MxSxD = jnp.asarray(np.where(real[:, :, None], ex, 0.0), jnp.float32)
        self.example_NxD = jnp.asarray(up, jnp.float32)

    def _split(self, chunks: ColumnChunks):
        """Training rows usable (with examples and observed entries), split into fit and dev."""
        m, n = chunks.shape
        if (m, n) != (self.task_example_MxSxD.shape[0], self.example_NxD.shape[0]):
            raise ValueError(f"the matrix is {m} x {n}, the representations are for "
                             f"{self.task_example_MxSxD.shape[0]} tasks x "
                             f"{self.example_NxD.shape[0]} examples")
        train = np.flatnonzero(np.asarray(chunks.rows_M))
        z = np.asarray(chunks.z_MxN[train], np.float32)  # the training rows only
        usable = (np.asarray(self.count_M)[train] > 0) & np.isfinite(z).any(1)
        train, z = train[usable], z[usable]
        if len(train) == 0:
            raise ValueError("rep_dot needs a training task with examples and observed entries")
        c = self.config
        n_dev = 0
        if c.dev_fraction > 0 and len(train) >= 2:
            n_dev = int(min(len(train) - 1, max(1, round(c.dev_fraction * len(train)))))
        dev_pos = np.zeros(len(train), bool)
        if n_dev:
            dev_pos[np.random.default_rng(c.dev_seed).choice(len(train), n_dev, replace=False)] = 1
        return train[~dev_pos], z[~dev_pos], train[dev_pos], z[dev_pos]

    def fit(self, chunks: ColumnChunks) -> RepDotState:
        c = self.config
        fit_rows, z_fit, dev_rows, z_dev = self._split(chunks)
        finite = np.isfinite(z_fit)
        vals = z_fit[finite]
        binary = bool(np.isin(vals, (0.0, 1.0)).all())
        loss = ("bce" if binary else "mse") if c.loss == "auto" else c.loss
        prior = float(np.clip((vals > 0).mean(), 1e-6, 1.0 - 1e-6))
        bias = math.log(prior / (1.0 - prior)) if loss == "bce" and c.prior else 0.0

        # Each training row's columns: forgotten first, then not forgotten, then missing.
        cls = np.where(finite, np.where(z_fit > 0, 0, 1), 2).astype(np.int8)
        order = np.argsort(cls, axis=1, kind="stable").astype(np.int32)
        zs = np.take_along_axis(np.where(finite, z_fit, 0.0), order, axis=1)
        if loss == "bce":
            zs = (zs > 0).astype(np.float32)
        pos_T = jnp.asarray((cls == 0).sum(1), jnp.int32)
        neg_T = jnp.asarray((cls == 1).sum(1), jnp.int32)
        data = (jnp.asarray(order), jnp.asarray(zs, jnp.float32), pos_T, neg_T,
                self.count_M[fit_rows], self.task_example_MxSxD[fit_rows])

        d = self.example_NxD.shape[1]
        if c.normalize_features:
            mean_D, std_D = _feature_stats(self.task_example_MxSxD, self.count_M, chunks.rows_M,
                                           self.example_NxD)
        else:
            mean_D, std_D = jnp.zeros((d,), jnp.float32), jnp.ones((d,), jnp.float32)
        keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(c.seeds, dtype=jnp.uint32) + c.seed)
        init_keys, draw_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        params = jax.vmap(init_head, in_axes=(0, None, None))(init_keys, d, c.output_dim or d)
        opt_state = jax.vmap(optax.adam(c.lr_head).init)(params)

        bias_j, temp = jnp.float32(bias), jnp.float32(c.temperature)
        n_chunks = -(-c.steps // c.eval_every)
        has_dev = len(dev_rows) > 0
        if has_dev:
            dev_ex = self.task_example_MxSxD[dev_rows]
            dev_count = self.count_M[dev_rows]
            z_dev = jnp.asarray(z_dev)
        best = (params, jnp.full((c.seeds,), -jnp.inf, jnp.float32),
                jnp.zeros((c.seeds,), jnp.int32))
        eval_steps, f1s, losses = [], [], []
        for i in range(n_chunks):
            params, opt_state, mean_loss = _train_chunk(
                params, opt_state, draw_keys, jnp.int32(i * c.eval_every), jnp.int32(c.steps),
                data, self.example_NxD, mean_D, std_D, bias_j, temp, jnp.float32(c.lr_head),
                batch=c.batch_tasks, length=c.eval_every, loss=loss)
            step = min((i + 1) * c.eval_every, c.steps)
            eval_steps.append(step)
            losses.append(mean_loss)
            if has_dev:
                f1 = heads_dev_f1(params, mean_D, std_D, bias_j, dev_ex, dev_count, z_dev,
                             self.example_NxD, temp, block=c.block_examples)
                f1s.append(f1)
                best = _keep_best(*best, params, f1, jnp.int32(step))
        if has_dev:
            kept, best_f1, best_step = best
            dev_f1 = jnp.stack(f1s, 1)
        else:  # nothing to select on: the last parameters
            kept, best_f1 = params, jnp.full((c.seeds,), jnp.nan)
            best_step = jnp.full((c.seeds,), c.steps, jnp.int32)
            dev_f1 = jnp.full((c.seeds, len(eval_steps)), jnp.nan)
        return RepDotState(
            params=kept, feature_mean_D=mean_D, feature_std_D=std_D, bias=bias_j,
            prior=jnp.float32(prior), step_S=best_step, best_f1_S=best_f1,
            eval_steps_E=jnp.asarray(eval_steps, jnp.int32), dev_f1_SxE=dev_f1,
            train_loss_SxE=jnp.stack(losses, 1), fit_rows=jnp.asarray(fit_rows, jnp.int32),
            dev_rows=jnp.asarray(dev_rows, jnp.int32), loss=loss)

    def predict_rows(self, state: RepDotState, rows_B: np.ndarray) -> jax.Array:
        """Predicted rows [B, N] of matrix rows `rows_B` (score + bias, averaged over heads)."""
        rows = jnp.asarray(np.asarray(rows_B), jnp.int32)
        return predict_scores(state.params, state.feature_mean_D, state.feature_std_D, state.bias,
                        self.task_example_MxSxD[rows], self.count_M[rows], self.example_NxD,
                        jnp.float32(self.config.temperature), block=self.config.block_examples)

    def complete(self, state: RepDotState, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        """The rows of the batch's tasks: on a binary matrix (loss auto -> bce) the forgetting
        probabilities sigmoid(logit), which the protocol thresholds at 1/2 there; else the scores."""
        rows = self.predict_rows(state, batch.task_B)
        return jax.nn.sigmoid(rows) if state.loss == "bce" and self.config.loss == "auto" else rows


def describe(state: RepDotState) -> dict[str, Any]:
    """A JSON-ready summary of a fit: loss, prior, kept steps and their dev F1."""
    return {"loss": state.loss, "prior": float(state.prior), "bias": float(state.bias),
            "steps": np.asarray(state.step_S).tolist(),
            "dev_f1": np.asarray(state.best_f1_S).tolist(),
            "fit_rows": int(state.fit_rows.shape[0]), "dev_rows": int(state.dev_rows.shape[0])}
