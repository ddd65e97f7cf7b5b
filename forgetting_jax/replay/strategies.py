"""Replay strategies: which upstream examples a run replays, as a schedule of the sampler.

  none              no replay (plain fine-tuning; the run that also gives the task's true row)
  random            every pool example equally likely
  predicted:METHOD  softmax(predicted / T): the task's row completed by METHOD (predict/methods.py)
                    from k observed entries of its true row, with the matrix's rows as training rows;
                    or, for rep_sim and rep_dot, forecast from the base model's representation of
                    the task (no entry of its row observed)
  ground_truth      softmax(true / T): the oracle, the task's true row
  online:METHOD     random for the first `online_fraction` of the steps; at that step the model
                    scores k pool examples, their forgetting (NLL now - NLL of the base model)
                    completes the row, and the rest of the run replays by prediction, never an
                    example it replayed already
  forecast          the replay weights of replay.weights_file (a forecast file; replay/weights_file.py)
  top:STRATEGY      STRATEGY's scores, highest first, without sampling

The pool is every upstream example with a base score, minus the held-out set: held-out examples
have logit -inf in every strategy, so they are never replayed.
"""

import logging
import os
import threading
from typing import Any, Callable, Sequence

import jax
import numpy as np

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.experiment.choices import STRATEGY_KINDS as KINDS, Strategy, parse_strategy  # noqa: F401
from forgetting_jax.predict.methods import Batch, CompletionConfig
from forgetting_jax.predict.protocol import draw_columns, pair_keys
from forgetting_jax.predict.registry import REPRESENTATION, build_methods
from forgetting_jax.replay.mixture import replay_positions
from forgetting_jax.replay.sampler import ReplaySchedule, replay_logits
from forgetting_jax.utils.fingerprint import fingerprint
from forgetting_jax.utils.io import write_npz
from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.replay")

PROBE_FILE = "replay_probe.npz"


def task_code(task: str) -> int:
    """A stable 31-bit integer of a task name (the task's share of every seed)."""
    return int(fingerprint(task, 8), 16) & 0x7FFFFFFF


def observed_columns(truth_BxN: np.ndarray, pool_N: np.ndarray, k: int, seed: int, tasks: Sequence[str]) -> np.ndarray:
    """k pool columns with a finite true value per task [B, k], drawn uniformly (predict.protocol)."""
    codes = np.asarray([task_code(t) for t in tasks])
    keys = pair_keys(seed, np.zeros(len(tasks), np.int64), codes)
    out = []
    for key, truth in zip(keys, truth_BxN):
        valid = pool_N & np.isfinite(truth)
        if valid.sum() < k:
            raise ValueError(f"replay.k={k} observed entries, but the pool has only {int(valid.sum())} scored examples")
        out.append(np.asarray(draw_columns(key, jax.numpy.asarray(valid), k)))
    return np.stack(out).astype(np.int64)


class Completer:
    """Completes new rows from k observed entries with the matrix's rows as training rows: each
    method fitted once (predict/methods.py), then folded in per batch of rows.

    The representation forecasters (rep_sim, rep_dot) predict a new task's row from its
    representation instead: `representations` holds the matrix file's arrays (its rows), and
    `task_representations(tasks)` gives the new tasks' ({"task_embeddings" [B, D],
    "task_example_last_hidden" [B, S, D], "task_example_count" [B]}); the new tasks become extra
    rows that no fit reads.
    """

    def __init__(self, z_train_MxN: np.ndarray, config: CompletionConfig, seed: int,
                 representations: dict | None = None,
                 task_representations: Callable[[Sequence[str]], dict] | None = None, rep_dot_config: Any = None):
        self.z_train_MxN = np.asarray(z_train_MxN, np.float32)
        self.chunks = ColumnChunks(self.z_train_MxN)
        self.config, self.seed = config, seed
        self.representations, self.task_representations = representations or {}, task_representations
        self.rep_dot_config = rep_dot_config
        self._fitted: dict[str, tuple[Any, Any]] = {}

    def _complete_from_representations(self, method: str, tasks: Sequence[str]) -> np.ndarray:
        if self.task_representations is None:
            raise ValueError(f"replay strategy predicted:{method} needs the representations of the new tasks")
        m, n = self.z_train_MxN.shape
        new = self.task_representations(tasks)
        arrays = dict(self.representations)
        for key in ("task_embeddings", "task_example_last_hidden", "task_example_count"):
            if arrays.get(key) is not None:
                arrays[key] = np.concatenate([np.asarray(arrays[key]), np.asarray(new[key]).astype(arrays[key].dtype)])
        z = np.concatenate([self.z_train_MxN, np.full((len(tasks), n), np.nan, np.float32)])
        rows = np.arange(m + len(tasks)) < m
        chunks = ColumnChunks(z, rows)
        built = build_methods([method], self.config, arrays, self.rep_dot_config)[method]
        b = len(tasks)
        keys = pair_keys(self.seed, np.zeros(b, np.int64), np.asarray([task_code(t) for t in tasks]))
        k = 1  # the observed entries are not read by these methods
        batch = Batch(m + np.arange(b), keys, jax.numpy.zeros((b, k), jax.numpy.int32),
                      jax.numpy.zeros((b, k), jax.numpy.float32))
        return np.asarray(built.complete(built.fit(chunks), batch, chunks), np.float64)

    def complete(self, method: str, obs_idx_BxK: np.ndarray, obs_val_BxK: np.ndarray, tasks: Sequence[str]
                 ) -> np.ndarray:
        """Predicted rows [B, N] of the tasks whose observed entries are given."""
        if method in REPRESENTATION:
            return self._complete_from_representations(method, tasks)
        if method not in self._fitted:
            built = build_methods([method], self.config)[method]
            self._fitted[method] = (built, built.fit(self.chunks))
        built, state = self._fitted[method]
        b = len(tasks)
        keys = pair_keys(self.seed, np.zeros(b, np.int64), np.asarray([task_code(t) for t in tasks]))
        batch = Batch(np.zeros(b, np.int64), keys, jax.numpy.asarray(obs_idx_BxK, jax.numpy.int32),
                      jax.numpy.asarray(obs_val_BxK, jax.numpy.float32))
        return np.asarray(built.complete(state, batch, self.chunks), np.float64)


class OnlineSchedule:
    """Random replay for the slots of the first `switch_step` steps, then replay by the row that
    `probe(params_fn)` predicts from the model after `switch_step` steps; the examples replayed
    before are skipped by the first pass after the switch.

    The prediction is written to run_dir/replay_probe.npz before the next step runs, so a run
    resumed after the switch replays what an uninterrupted run replays. `take` waits (on the
    batch thread) until the prediction exists.
    """

    def __init__(self, random: ReplaySchedule, switch_step: int, probe: Callable[[Callable[[], Any]], dict],
                 temperature: float, allowed_N: np.ndarray, seed: Sequence[int], top: bool):
        self.random, self.switch_step, self.probe = random, int(switch_step), probe
        self.temperature, self.allowed_N, self.seed, self.top = temperature, allowed_N, list(seed), top
        self.first_slot = 0
        self.path: str | None = None
        self.predicted: ReplaySchedule | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()

    def bind(self, run_dir: str, ratio, batch_size: int) -> None:
        replay, index = replay_positions(0, self.switch_step * batch_size, ratio)
        self.first_slot = int(replay.sum())
        self.path = os.path.join(run_dir, PROBE_FILE)
        self.predicted, self.error = None, None
        self._ready.clear()
        if os.path.isfile(self.path):
            with np.load(self.path) as data:
                self._switch(data["predicted"])

    def _switch(self, predicted_N: np.ndarray) -> None:
        logits = replay_logits(predicted_N, self.temperature, self.allowed_N)
        replayed = self.random.take(np.arange(self.first_slot))
        self.predicted = ReplaySchedule(logits, self.seed + [1], self.top, exclude=replayed)
        self._ready.set()

    def after_step(self, step: int, params_fn: Callable[[], Any]) -> None:
        if self.predicted is not None or step < self.switch_step:
            return
        if step > self.switch_step:
            raise RuntimeError(f"{self.path}: missing, and the run is past step {self.switch_step} where it is "
                               "written; delete the run directory to start the run again")
        try:
            probe = self.probe(params_fn)
            if is_main():
                write_npz(self.path, **probe)
            self._switch(probe["predicted"])
        except BaseException as err:
            self.error = err
            self._ready.set()
            raise

    def take(self, slots: np.ndarray) -> np.ndarray:
        slots = np.asarray(slots, np.int64)
        early = slots < self.first_slot
        out = np.zeros(slots.shape, np.int64)
        if early.any():
            out[early] = self.random.take(slots[early])
        if (~early).any():
            self._ready.wait()
            if self.error is not None:
                raise RuntimeError("the online replay prediction failed") from self.error
            out[~early] = self.predicted.take(slots[~early] - self.first_slot)
        return out
