"""rep_dot with a trainable encoder (predict.rep_dot_encoder = full | top:K), as the paper's final
code trains it (AuCson/low-rank-forgetting, trainer/fgt_prediction_trainer.py with
`rep_task_level`, data_utils/fpd_helper.py `sample_episode_task_level_balanced`).

The forecaster is the frozen variant's (predict/rep_dot.py: head Linear(D, D) -> ReLU ->
Linear(D, D_out = 768), score(a, u) = -mean_d(h(a)_d h(u)_d) / T, a task's row the mean of its
examples' scores) with the representations computed by an encoder that trains with the head:
each example's final hidden state at its last token, no standardisation. It is a training run of
the project's driver (train/driver.py), on the mesh of config.mesh:

  step        B task examples (a task, then one of its examples, uniformly), each with one
              forgotten (Z > 0) and one kept (Z <= 0) upstream example of that task's row, drawn
              on the host as a pure function of (seed, step): 3B sequences, one per row of a fixed
              [3B, L] batch (L: the longest sequence, rounded up to 64). Loss: MSE of the score
              against Z, or on a binary matrix BCE of sigmoid(score) against the label, without a
              prior (the final code's `pred_forget_pairwise_ce`); a missing side weighs 0.
  optimizer   Adam, the encoder at `lr_encoder` (1e-5 in the paper) and the head at `lr_head`
              (1e-4 there: lr 1e-5 x lr_scale 10), constant; with top:K only the top K layers and
              the final norm have gradients and optimizer state (predict/encoder.py).
  selection   every `eval_every` steps the N upstream examples and the selection tasks' examples
              are re-encoded by the packed scorer (score/scorer.py `Scorer.represent`) with the
              current encoder, and the selection tasks' F1 of (row > 0) against (Z > 0) is the
              validation figure (the driver keeps the step of the lowest 1 - F1). `select="dev"`
              holds out a seeded `dev_fraction` of the training tasks, as the frozen variant does;
              `select="test"` chooses on the test tasks, as the final code does (its dev set is its
              test set): only to reproduce its numbers.
  result      the kept step's encoder re-encodes every task's examples and the upstream examples
              once; the head on them predicts the rows. The run lives in
              W/predict/rep_dot/<fp>/ (checkpoints while it trains, so an interrupted run resumes;
              metrics.jsonl; result.npz and fingerprint.json when it finishes, so the same inputs
              are never trained twice).
"""

import dataclasses
import logging
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from forgetting_jax.data.packing import PackedRows, materialize_rows
from forgetting_jax.experiment.choices import parse_rep_dot_encoder
from forgetting_jax.models.decoder import logical_axes, param_shapes
from forgetting_jax.models.loading import load_model
from forgetting_jax.predict import encoder as enc
from forgetting_jax.predict.rep_dot import head, heads_dev_f1, init_head, predict_scores
from forgetting_jax.score.scorer import Scorer, data_mesh
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train import driver
from forgetting_jax.train.mesh import batch_parallelism, make_mesh
from forgetting_jax.train.partitioning import activation_rules, batch_sharding, replicated, tree_shardings
from forgetting_jax.train.state import TrainState
from forgetting_jax.utils.fingerprint import fingerprint
from forgetting_jax.utils.io import write_npz

log = logging.getLogger("forgetting_jax.predict")
Pair = tuple[np.ndarray, np.ndarray]  # (ids_T int32, mask_T bool)


@dataclasses.dataclass(frozen=True)
class EncoderInputs:
    """What a trainable rep_dot reads besides Z (built from a workspace by matrix/encoder_inputs.py)."""

    model_dir: str  # the encoder's HF directory
    model_fingerprint: str
    upstream: tuple[Pair, ...]  # [N] the matrix's columns, tokenized by the encoder's tokenizer
    task_examples: tuple[tuple[Pair, ...], ...]  # [M] each row's represented training examples
    data_fingerprint: str  # of the sequences above
    workdir: str
    mesh: Any = None  # config.mesh (None: every device on the data axis)
    dtype: str = "float32"  # compute dtype of the encoder
    tokens_per_batch: int = 16384  # of the re-encoding passes


@dataclasses.dataclass(frozen=True)
class PairRows(PackedRows):
    """One step's 3B sequences, one per row (task examples, forgotten, kept), and the targets."""

    y_2xB: np.ndarray = None  # targets of the (forgotten, kept) pairs
    w_2xB: np.ndarray = None  # 1 where the task's row has that side, else 0


class PairBatches:
    """The driver's `batches`: step -> PairRows, a pure function of (seed, step)."""

    def __init__(self, inputs: EncoderInputs, z_TxN: np.ndarray, rows_T: np.ndarray, batch: int, binary: bool,
                 seed: int, row_length: int):
        self.inputs, self.rows_T, self.batch_tasks, self.seed = inputs, rows_T, batch, seed
        self.row_length = row_length
        finite = np.isfinite(z_TxN)
        self.z_TxN = np.where(finite, (z_TxN > 0) if binary else z_TxN, 0.0).astype(np.float32)
        self.pos = [np.flatnonzero(f & (z > 0)) for f, z in zip(finite, z_TxN)]
        self.neg = [np.flatnonzero(f & ~(z > 0)) for f, z in zip(finite, z_TxN)]

    def batch(self, step: int) -> PairRows:
        rng = np.random.default_rng([self.seed, step])
        b = self.batch_tasks
        seqs: list[Pair] = []
        others: list[Pair] = []
        y, w = np.zeros((2, b), np.float32), np.zeros((2, b), np.float32)
        for i in range(b):
            t = int(rng.integers(len(self.rows_T)))
            examples = self.inputs.task_examples[int(self.rows_T[t])]
            seqs.append(examples[int(rng.integers(len(examples)))])
            for side, cols in enumerate((self.pos[t], self.neg[t])):
                j = int(cols[rng.integers(len(cols))]) if len(cols) else 0
                others.append(self.inputs.upstream[j])
                y[side, i], w[side, i] = self.z_TxN[t, j], float(len(cols) > 0)
        order = seqs + others[0::2] + others[1::2]  # task examples, forgotten, kept
        rows = materialize_rows(order, [[e] for e in range(3 * b)], self.row_length, 1)
        return PairRows(**{f.name: getattr(rows, f.name) for f in dataclasses.fields(rows)}, y_2xB=y, w_2xB=w)


def _rate_by_part(rates: dict) -> optax.GradientTransformation:
    """Scales the updates of each top-level part of the parameters by -its learning rate (torch's
    Adam with parameter groups: one Adam, a rate per group)."""

    def update(updates, state, params=None):
        return {part: jax.tree.map(lambda u, r=rates[part]: -r * u, tree) for part, tree in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class RepDotProgram:
    """The driver's Program (train/driver.py) of one rep_dot run: encoder + head, one slot."""

    num_slots = 1
    FIELDS = ("tokens", "segment_ids", "positions", "y_2xB", "w_2xB")

    def __init__(self, model_config: Any, mesh: Any, full: bool, shardings: tuple, lrs: tuple[float, float],
                 batch: int, temperature: float, loss: str, evaluate_fn):
        self.mesh, self._evaluate = mesh, evaluate_fn
        train_sh, self.frozen_shardings, shapes = shardings
        self.optimizer = optax.chain(optax.scale_by_adam(), _rate_by_part({"encoder": lrs[0], "head": lrs[1]}))
        repl = replicated(mesh)
        opt_shapes = jax.eval_shape(self.optimizer.init, shapes)
        opt_sh = optax.tree_map_params(self.optimizer, lambda _, s: s, opt_shapes, train_sh,
                                       transform_non_params=lambda _: repl)
        self.state_shardings = TrainState(step=repl, params=train_sh, opt_state=opt_sh)
        self.abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            jax.eval_shape(lambda p: TrainState.create(p, self.optimizer), shapes), self.state_shardings)
        rows = 3 * batch
        self.row_sharding = batch_sharding(mesh) if rows % batch_parallelism(mesh) == 0 else repl
        optimizer = self.optimizer

        def train(state: TrainState, frozen: dict, data: dict):
            def loss_fn(params):
                h_ExD = enc.last_hidden(model_config, params["encoder"], frozen, full, data)
                d = h_ExD.shape[1]
                out = head(params["head"], h_ExD, jnp.zeros((d,)), jnp.ones((d,)))
                a, u = out[:batch], out[batch:].reshape(2, batch, -1)
                score = -jnp.mean(a[None] * u, -1) / temperature
                per = (optax.sigmoid_binary_cross_entropy(score, data["y_2xB"]) if loss == "bce"
                       else jnp.square(score - data["y_2xB"]))
                return (data["w_2xB"] * per).sum() / jnp.maximum(data["w_2xB"].sum(), 1.0)

            value, grads = jax.value_and_grad(loss_fn)(state.params)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            metrics = {"loss": value, "grad_norm": optax.tree.norm(grads), "lr": jnp.float32(lrs[0]),
                       "loss_tokens": data["w_2xB"].sum()}
            return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), metrics

        sh = {k: self.row_sharding if k in self.FIELDS[:3] else repl for k in self.FIELDS}
        self._train = jax.jit(train, in_shardings=(self.state_shardings, self.frozen_shardings, sh),
                              out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
        self._init = jax.jit(lambda p: TrainState.create(p, optimizer), out_shardings=self.state_shardings)

    def init(self, states, fresh):
        if states[0] is not None:
            return states[0]
        with activation_rules(self.mesh):
            return self._init(fresh())

    def device_batch(self, rows):
        r = rows[0]
        return {k: jax.device_put(np.asarray(getattr(r, k)), self.row_sharding if k in self.FIELDS[:3]
                                  else replicated(self.mesh)) for k in self.FIELDS}

    def step(self, states, frozen, batch, active):
        with activation_rules(self.mesh):
            return self._train(states, frozen, batch)

    def evaluate(self, states, frozen, eval_rows):
        return np.array([1.0 - self._evaluate(states.params, frozen)]), np.array([1.0])

    def take(self, states, slot):
        return states


@dataclasses.dataclass(frozen=True)
class TrainedEncoder:
    """A finished run: the kept head and the kept encoder's last-token states."""

    head_params: dict  # w1 [1, D, D], b1 [1, D], w2 [1, D, D_out], b2 [1, D_out]
    task_example_MxSxD: np.ndarray
    task_example_count_M: np.ndarray
    example_NxD: np.ndarray
    best_step: int
    best_dev_f1: float
    run_dir: str
    loss: str


def _scorer(model_config: Any, params: dict, mesh: Any) -> Scorer:
    """The packed scorer of `params`, data-parallel over the mesh's devices (the parameters are
    placed on it once per re-encoding pass)."""
    return Scorer(model_config, params, mesh=data_mesh(list(mesh.devices.flat)))


def _encode(scorer: Scorer, pairs: Sequence[Pair], tokens_per_batch: int) -> np.ndarray:
    """Last-token final hidden states [n, D] of `pairs`."""
    return scorer.represent(list(pairs), tokens_per_batch=tokens_per_batch)[1]


def _task_states(scorer: Scorer, inputs: EncoderInputs, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """([T, S, D] last-token states of each row's examples, zeros beyond its count; counts [T])."""
    counts = np.asarray([len(inputs.task_examples[r]) for r in rows], np.int32)
    flat = [p for r in rows for p in inputs.task_examples[r]]
    states = _encode(scorer, flat, inputs.tokens_per_batch)
    s_max = max(int(counts.max(initial=1)), 1)
    out = np.zeros((len(rows), s_max, states.shape[1]), np.float32)
    for i, (start, c) in enumerate(zip(np.cumsum(counts) - counts, counts)):
        out[i, :c] = states[start:start + c]
    return out, counts


def train_encoder(inputs: EncoderInputs, config: Any, z_MxN: np.ndarray, fit_rows: np.ndarray,
                  select_rows: np.ndarray, binary: bool) -> TrainedEncoder:
    """Trains (or reuses) rep_dot's encoder and head on the rows `fit_rows` of Z, choosing the
    step on `select_rows` (predict.rep_dot.RepDotConfig `config`: encoder, steps, batch_tasks,
    lr_head, lr_encoder, eval_every, output_dim, temperature, seed)."""
    kind, k = parse_rep_dot_encoder(config.encoder)
    full = kind == "full"
    loss = ("bce" if binary else "mse") if config.loss == "auto" else config.loss
    inputs_fp = {"kind": "rep_dot", "version": 1, "model": inputs.model_fingerprint, "data": inputs.data_fingerprint,
                 "z": fingerprint(np.nan_to_num(np.asarray(z_MxN[fit_rows], np.float32), nan=-1e30)),
                 "select_z": fingerprint(np.nan_to_num(np.asarray(z_MxN[select_rows], np.float32), nan=-1e30)),
                 "fit_rows": np.asarray(fit_rows).tolist(), "select_rows": np.asarray(select_rows).tolist(),
                 "encoder": config.encoder, "loss": loss, "dtype": inputs.dtype,
                 "settings": {f: getattr(config, f) for f in ("steps", "batch_tasks", "lr_head", "lr_encoder",
                                                              "eval_every", "output_dim", "temperature", "seed")}}
    fp = fingerprint(inputs_fp)
    run_dir = os.path.join(inputs.workdir, "predict", "rep_dot", fp)
    if ckpt_lib.is_finished(run_dir, fp):
        log.info("rep_dot encoder %s is already trained; reusing it", run_dir)
        return _read_result(run_dir, loss)

    mesh = make_mesh(inputs.mesh)
    model_config, host_params = load_model(inputs.model_dir, param_dtype="float32", dtype=inputs.dtype,
                                           remat_policy="none")
    n_layers = model_config.num_layers
    k = n_layers if full else enc.trained_layers(k, n_layers)
    shardings = tree_shardings(logical_axes(model_config), param_shapes(model_config), mesh)
    enc_sh, frozen_sh = enc.split_params(shardings, n_layers, k, full, sliced=False)
    trainable, frozen = enc.split_params(host_params, n_layers, k, full)
    frozen = jax.device_put(frozen, frozen_sh)
    d, d_out = model_config.hidden_size, int(config.output_dim or model_config.hidden_size)
    head_shapes = jax.eval_shape(lambda: init_head(jax.random.key(0), d, d_out))
    train_sh = {"encoder": enc_sh, "head": jax.tree.map(lambda _: replicated(mesh), head_shapes)}
    shapes = {"encoder": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), trainable), "head": head_shapes}

    def fresh():
        head0 = init_head(jax.random.key(int(config.seed)), d, d_out)
        return jax.device_put({"encoder": trainable, "head": head0}, train_sh)

    z_select = jnp.asarray(np.asarray(z_MxN[select_rows], np.float32))

    def evaluate(params, frozen_now):
        scorer = _scorer(model_config, enc.merge_params(params["encoder"], frozen_now), mesh)
        upstream = _encode(scorer, inputs.upstream, inputs.tokens_per_batch)
        select_ex, select_count = _task_states(scorer, inputs, select_rows)
        head1 = jax.tree.map(lambda a: jnp.asarray(a)[None], params["head"])
        zeros, ones = jnp.zeros((d,)), jnp.ones((d,))
        f1 = heads_dev_f1(head1, zeros, ones, jnp.float32(0.0), jnp.asarray(select_ex), jnp.asarray(select_count),
                     z_select, jnp.asarray(upstream), jnp.float32(config.temperature), block=config.block_examples)
        return float(f1[0])

    lengths = [len(p[0]) for p in inputs.upstream] + [len(p[0]) for r in fit_rows for p in inputs.task_examples[r]]
    row_length = -(-max(lengths) // 64) * 64
    program = RepDotProgram(model_config, mesh, full, (train_sh, frozen_sh, shapes),
                            (float(config.lr_encoder), float(config.lr_head)), int(config.batch_tasks),
                            float(config.temperature), loss, evaluate)
    batches = PairBatches(inputs, np.asarray(z_MxN[fit_rows], np.float32), np.asarray(fit_rows),
                          int(config.batch_tasks), loss == "bce", int(config.seed), row_length)
    driver.run_record(run_dir, inputs_fp)
    log.info("training rep_dot's encoder (%s, %d of %d layers, %.1fM parameters) and head on %d tasks for %d steps; "
             "the step chosen on %d tasks; run in %s", config.encoder, k, n_layers, model_config.num_params / 1e6,
             len(fit_rows), config.steps, len(select_rows), run_dir)
    run = driver.Run("rep_dot", run_dir, batches, eval_rows=[select_rows], select_best=True,
                     divergence_hint=f"lower predict.rep_dot_encoder_lr (now {config.lr_encoder:g}) or "
                                     f"predict.rep_dot_lr (now {config.lr_head:g})")
    cadence = driver.Cadence(int(config.steps), int(config.eval_every), 0, max(1, int(config.eval_every)))
    [(params, meta)] = driver.train(program, [run], frozen, fresh, cadence, 6.0 * model_config.num_params, None,
                                    "rep_dot")
    scorer = _scorer(model_config, enc.merge_params(params["encoder"], frozen), mesh)
    task_ex, task_count = _task_states(scorer, inputs, np.arange(len(inputs.task_examples)))
    upstream = _encode(scorer, inputs.upstream, inputs.tokens_per_batch)
    del scorer
    head1 = {name: np.asarray(jax.device_get(a))[None] for name, a in params["head"].items()}
    best_loss = meta.get("best_val_loss")
    result = TrainedEncoder(head1, task_ex, task_count, upstream, int(meta.get("best_step") or config.steps),
                            float("nan") if best_loss is None else 1.0 - float(best_loss), run_dir, loss)
    _write_result(run_dir, result)
    driver.finish_record(run_dir, fp, inputs_fp, False, best_step=result.best_step, best_f1=result.best_dev_f1)
    return result


def _write_result(run_dir: str, r: TrainedEncoder) -> None:
    from forgetting_jax.utils.runtime import is_main

    if is_main():
        write_npz(os.path.join(run_dir, "result.npz"), task_example_last_hidden=r.task_example_MxSxD,
                  task_example_count=r.task_example_count_M, example_last_hidden=r.example_NxD,
                  best_step=np.asarray(r.best_step), best_dev_f1=np.asarray(r.best_dev_f1),
                  **{f"head_{name}": a for name, a in r.head_params.items()})


def _read_result(run_dir: str, loss: str) -> TrainedEncoder:
    with np.load(os.path.join(run_dir, "result.npz")) as f:
        return TrainedEncoder({name: f[f"head_{name}"] for name in ("w1", "b1", "w2", "b2")},
                              f["task_example_last_hidden"], f["task_example_count"], f["example_last_hidden"],
                              int(f["best_step"]), float(f["best_dev_f1"]), run_dir, loss)


def predict_rows(trained: TrainedEncoder, rows_B: np.ndarray, temperature: float, block: int) -> jax.Array:
    """Predicted rows [B, N] of matrix rows `rows_B`: the head on the trained encoder's states."""
    d = trained.example_NxD.shape[1]
    rows = np.asarray(rows_B)
    return predict_scores(jax.tree.map(jnp.asarray, trained.head_params), jnp.zeros((d,)), jnp.ones((d,)),
                          jnp.float32(0.0), jnp.asarray(trained.task_example_MxSxD[rows]),
                          jnp.asarray(trained.task_example_count_M[rows]), jnp.asarray(trained.example_NxD),
                          jnp.float32(temperature), block=block)


class TrainedRepDot:
    """The protocol's interface (predict/methods.py) for rep_dot with a trainable encoder.

    test_rows: the protocol's test rows, which select="test" chooses the step on (set by
    predict/comparison.py before the protocol runs)."""

    name = "rep_dot"

    def __init__(self, inputs: EncoderInputs, config: Any):
        self.inputs, self.config = inputs, config
        self.test_rows: np.ndarray | None = None

    def _rows(self, chunks) -> tuple[np.ndarray, np.ndarray]:
        """(rows trained on, rows the step is chosen on)."""
        m, n = chunks.shape
        if (m, n) != (len(self.inputs.task_examples), len(self.inputs.upstream)):
            raise ValueError(f"the matrix is {m} x {n}, the encoder inputs are for {len(self.inputs.task_examples)} "
                             f"tasks x {len(self.inputs.upstream)} examples")
        z = np.asarray(chunks.z_MxN)
        usable = np.asarray([len(e) > 0 for e in self.inputs.task_examples]) & np.isfinite(z).any(1)
        train = np.flatnonzero(np.asarray(chunks.rows_M) & usable)
        if len(train) == 0:
            raise ValueError("rep_dot needs a training task with examples and observed entries")
        c = self.config
        if c.select == "test":
            if self.test_rows is None or not len(self.test_rows):
                raise ValueError("rep_dot with predict.rep_dot_select=test needs the protocol's test rows")
            return train, np.asarray(self.test_rows)
        if len(train) < 2:
            return train, train
        n_dev = int(min(len(train) - 1, max(1, round(c.dev_fraction * len(train)))))
        dev = np.zeros(len(train), bool)
        dev[np.random.default_rng(c.dev_seed).choice(len(train), n_dev, replace=False)] = True
        return train[~dev], train[dev]

    def fit(self, chunks) -> TrainedEncoder:
        from forgetting_jax.predict.logistic import is_binary

        fit_rows, select_rows = self._rows(chunks)
        z = np.asarray(chunks.z_MxN)
        return train_encoder(self.inputs, self.config, z, fit_rows, select_rows, is_binary(z[fit_rows]))

    def complete(self, state: TrainedEncoder, batch, chunks) -> jax.Array:
        """The batch's rows: probabilities sigmoid(score) on a binary matrix (loss auto), else scores."""
        rows = predict_rows(state, batch.task_B, float(self.config.temperature), int(self.config.block_examples))
        return jax.nn.sigmoid(rows) if state.loss == "bce" and self.config.loss == "auto" else rows
