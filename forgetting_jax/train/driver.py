"""The one training driver: P runs (P >= 1) stepped together by one compiled program.

Pre-training, fine-tuning, fine-tuning with replay and P tasks fine-tuned at once all run here.
A `Program` is the compiled step of one task (`SingleTaskProgram`, train/step.py) or of P tasks
vmapped over a task axis (`multitask.MultiTaskProgram`), behind the same step signature. `train`
reads top to bottom: setup and restore, one loop, the results. Each `Run` keeps its own
bookkeeping (checkpoints, metrics log, validation, best step); what a run does besides training
(replay's online probe, a test's interruption) is a `Hook`, called at its start and after each
step. For every run of the group, whatever P is:

  resume       each run from its latest committed checkpoint (a damaged step falls back to the
               one before; train/checkpoints.py); runs that resume from different steps wait,
               inactive, until the group reaches their step
  metrics      metrics.jsonl per run: loss, lr, grad norm, tokens, tokens/s, MFU per step;
               validation losses (train/metrics.py); a progress bar and a log line every
               `log_every` steps
  cadence      validation every `eval_every` steps and at the last; checkpoints at validations,
               every `save_every` steps and at the last; the best step by validation loss
  result       per run, the parameters of its best step (restored from its checkpoint) or of the
               last step, and its meta {"best_step", "best_val_loss"}

The device runs one step ahead of the host: a step's metrics are read after the next step is
dispatched, and batches are built and transferred in a prefetch thread.
"""

import dataclasses
import logging
import os
import shutil
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np

from forgetting_jax.data.packing import PackedRows, materialize_rows
from forgetting_jax.data.pipeline import Prefetcher
from forgetting_jax.models.hf_checkpoint import export_hf_model
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train.batches import stats_of, to_device
from forgetting_jax.train.metrics import MetricsLog
from forgetting_jax.train.state import TrainState
from forgetting_jax.train.step import CompiledSteps
from forgetting_jax.utils.io import write_json
from forgetting_jax.utils.runtime import barrier, host_tree, is_main
from forgetting_jax.utils.progress import progress_bar

log = logging.getLogger("forgetting_jax.train")


class TrainingDiverged(ValueError):
    """A run's loss, gradient norm or validation loss is not finite: the run stops there, before
    anything of that step is checkpointed (its earlier, finite checkpoints stay)."""

    def __init__(self, run: "Run", step: int, what: str):
        self.run_name, self.run_dir, self.step = run.name, run.run_dir, step
        hint = run.divergence_hint or "lower the learning rate"
        super().__init__(f"{run.name}: diverged at step {step} ({what}); {hint} and rerun (other settings make a "
                         f"new run; the same settings resume from the last finite checkpoint in {run.run_dir} and "
                         "diverge again)")


class Hook:
    """Something a run does besides training, called by the loop; override what applies.

    start(step, params_fn)       once, at the run's starting step (0, or the step it resumes from)
    after_step(step, params_fn)  after each of the run's steps (`step`: steps done)
    params_fn() gives the run's trainable parameters after `step` steps (taken only when called).
    """

    def start(self, step: int, params_fn: Callable[[], Any]) -> None:
        pass

    def after_step(self, step: int, params_fn: Callable[[], Any]) -> None:
        pass


@dataclasses.dataclass
class Run:
    """One run of a group and its bookkeeping: its directory, data, checkpoints, metrics log,
    validation and best step (the driver calls these methods; nothing else writes them)."""

    name: str
    run_dir: str
    batches: Any  # .batch(step) -> PackedRows: the step's rows, a pure function of the step
    eval_rows: Sequence[PackedRows] = ()  # validation batches (host rows); empty: no validation
    select_best: bool = True  # the result is the lowest-validation-loss step (else the last)
    hooks: Sequence[Hook] = ()
    divergence_hint: str = ""  # what to change when the run diverges, e.g. "lower train.lr (now 1e+06)"
    # Filled in by `open`.
    start: int = 0
    checkpoints: ckpt_lib.RunCheckpoints | None = None
    metrics: MetricsLog | None = None
    meta: dict = dataclasses.field(default_factory=lambda: {"best_step": None, "best_val_loss": None})

    @property
    def evaluating(self) -> bool:
        return bool(self.eval_rows)

    @property
    def by_validation(self) -> bool:
        return self.evaluating and self.select_best

    def open(self, abstract_state: TrainState, total: int) -> TrainState | None:
        """Its checkpoints and metrics log; the state it resumes from (None: it starts fresh).
        A damaged checkpoint step falls back to the one before (train/checkpoints.py)."""
        self.checkpoints = ckpt_lib.RunCheckpoints(os.path.join(self.run_dir, "checkpoints"), self.by_validation)
        resumed = self.checkpoints.restore_latest(abstract_state)
        state = None
        if resumed:
            self.start, state, self.meta = resumed
            log.info("%s: resuming from step %d of %d", self.name, self.start, total)
        self.metrics = MetricsLog(os.path.join(self.run_dir, "metrics.jsonl"), self.start)
        return state

    def record_step(self, done: int, values: dict, slot: int, stats: Any, seconds: float, flops_per_token: float,
                    peak_flops: float | None) -> None:
        """One step's metrics line (`values`: the group's metrics [P], this run's at `slot`);
        TrainingDiverged when its loss or gradient norm is not finite (after writing the line)."""
        rate = stats.real_tokens / seconds
        loss, grad_norm = float(values["loss"][slot]), float(values["grad_norm"][slot])
        self.metrics.write({"step": done, "loss": loss, "lr": float(values["lr"][slot]), "grad_norm": grad_norm,
                            "loss_tokens": int(values["loss_tokens"][slot]), "real_tokens": stats.real_tokens,
                            "examples": stats.examples, "seconds": seconds, "tokens_per_second": rate,
                            "mfu": rate * flops_per_token / peak_flops if peak_flops else None})
        if not (np.isfinite(loss) and np.isfinite(grad_norm)):
            raise TrainingDiverged(self, done, f"loss {loss}, gradient norm {grad_norm}")

    def validated(self, done: int, loss: float) -> bool:
        """Records a validation loss; True when it is the best so far (and the result is chosen
        by validation). TrainingDiverged when it is not finite (nothing is saved for this step)."""
        if not np.isfinite(loss):
            self.metrics.write({"step": done, "val_loss": loss, "best": False})
            raise TrainingDiverged(self, done, f"validation loss {loss}")
        best = self.select_best and (self.meta["best_val_loss"] is None or loss < self.meta["best_val_loss"])
        if best:
            self.meta = {"best_step": done, "best_val_loss": loss}
        self.metrics.write({"step": done, "val_loss": loss, "best": best})
        log.info("%s: step %d validation loss %.4f%s", self.name, done, loss, " (best)" if best else "")
        return best

    def result(self, last: Callable[[], TrainState], abstract_state: TrainState, total: int) -> tuple[Any, dict]:
        """(the selected trainable parameters, meta): its best step's (restored from its
        checkpoint) when chosen by validation, else the last step's (`last()`)."""
        self.checkpoints.wait()
        best_step = self.meta.get("best_step")
        if self.by_validation and best_step is not None and best_step != total:
            return self.checkpoints.restore(best_step, abstract_state)[0].params, self.meta
        return last().params, dict(self.meta, best_step=best_step or total)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.checkpoints is not None:
            self.checkpoints.wait()
            self.checkpoints.close()


@dataclasses.dataclass(frozen=True)
class Cadence:
    total_steps: int
    eval_every: int = 0  # 0: never
    save_every: int = 0  # 0: only at validations and the last step
    log_every: int = 10


class Program(Protocol):
    """The compiled step of a group of `num_slots` runs (see SingleTaskProgram, MultiTaskProgram)."""

    num_slots: int
    abstract_state: TrainState  # one run's state, with its shardings (restoring checkpoints)

    def init(self, states: Sequence[TrainState | None], fresh: Callable[[], Any]) -> Any: ...

    def device_batch(self, rows: Sequence[PackedRows | None]) -> dict: ...

    def step(self, states: Any, frozen: Any, batch: dict, active: np.ndarray) -> tuple[Any, dict]: ...

    def evaluate(self, states: Any, frozen: Any, eval_rows: Sequence[Sequence[PackedRows]]
                 ) -> tuple[np.ndarray, np.ndarray]: ...

    def take(self, states: Any, slot: int) -> TrainState: ...


class SingleTaskProgram:
    """One run: the compiled steps of train/step.py, batches [A, R, L]."""

    num_slots = 1

    def __init__(self, steps: CompiledSteps):
        self.steps = steps
        self.abstract_state = steps.abstract_state
        self._eval_cache: tuple[int, list] | None = None

    def init(self, states, fresh):
        return states[0] if states[0] is not None else self.steps.init_state(fresh())

    def device_batch(self, rows):
        return to_device(rows[0], self.steps.batch_sharding, self.steps.settings.micro_batches)

    def step(self, states, frozen, batch, active):
        return self.steps.train_step(states, frozen, batch)

    def evaluate(self, states, frozen, eval_rows):
        rows = eval_rows[0]
        if self._eval_cache is None or self._eval_cache[0] != id(rows):  # on the device once per run
            self._eval_cache = (id(rows), [to_device(r, self.steps.eval_batch_sharding) for r in rows])
        sums = [self.steps.eval_step(states.params, frozen, batch) for batch in self._eval_cache[1]]
        return (np.array([sum(float(s) for s, _ in sums)]), np.array([sum(float(c) for _, c in sums)]))

    def take(self, states, slot):
        return states


def empty_rows(num_rows: int, row_length: int, max_segments: int) -> PackedRows:
    """Rows without a token: what an inactive slot of a group steps on (skipped by the step)."""
    return materialize_rows([], [], row_length, max_segments, num_rows=num_rows)


def run_record(directory: str, inputs: dict) -> None:
    """W/.../<fp>/run.json: the inputs of a run, written when it starts (process 0)."""
    if is_main():
        os.makedirs(directory, exist_ok=True)
        write_json(os.path.join(directory, "run.json"), inputs)


def export_model(model_dir: str, config: Any, params: Any, *, base_config: dict | None, tokenizer_dir: str,
                 dtype: str | None) -> None:
    """A run's parameters (on the mesh) written as a Hugging Face directory: gathered to the host
    on every process (a collective: every process takes part), written by process 0."""
    host_params = host_tree(params)
    if is_main():
        export_hf_model(model_dir, config, host_params, base_config=base_config, tokenizer_dir=tokenizer_dir,
                        dtype=dtype)


def finish_record(directory: str, fp: str, inputs: dict, keep_checkpoints: bool, **extra: Any) -> None:
    """fingerprint.json (the run is finished), then the checkpoints go unless kept."""
    ckpt_lib.write_fingerprint(directory, fp, inputs, **extra)
    checkpoints = os.path.join(directory, "checkpoints")
    if not keep_checkpoints and is_main() and os.path.isdir(checkpoints):
        shutil.rmtree(checkpoints, ignore_errors=True)
    barrier(f"finished {fp}")  # the other processes read what process 0 just wrote


def train(program: Program, runs: Sequence[Run | None], frozen: Any, fresh: Callable[[], Any], cadence: Cadence,
          flops_per_token: float, peak_flops: float | None, label: str) -> list[tuple[Any, dict] | None]:
    """Runs (or resumes) every run of `runs` (one per slot of `program`; None: an idle slot).

    fresh() gives the starting trainable parameters on the mesh (called only when a run starts
    fresh). Returns per slot (the selected trainable parameters, meta {"best_step",
    "best_val_loss"}), None for idle slots.
    """
    if len(runs) != program.num_slots:
        raise ValueError(f"{len(runs)} runs for a program of {program.num_slots} slots")
    live = [(p, run) for p, run in enumerate(runs) if run is not None]
    total = cadence.total_steps
    try:
        # Setup and restore: each run from its latest checkpoint, or fresh.
        states = program.init([None if run is None else run.open(program.abstract_state, total) for run in runs],
                              fresh)
        first = min(run.start for _, run in live)
        group = _Group(program, runs, frozen, cadence, flops_per_token, peak_flops, label)
        if first == 0:
            group.validate(states, 0, only_fresh=True)
        for p, run in live:
            for hook in run.hooks:
                hook.start(run.start, lambda p=p: program.take(states, p).params)
        # The loop: one compiled step per iteration; its metrics are read after the next is dispatched.
        batches = Prefetcher(group.produce(first), 2)
        try:
            for step in range(first, total):
                batch, stats, active = next(batches)
                states, step_metrics = program.step(states, frozen, batch, active)
                group.dispatched(step, first, step_metrics, stats, active)
                done = step + 1
                evaluate = cadence.eval_every > 0 and (done % cadence.eval_every == 0 or done == total)
                save = done == total or (cadence.save_every > 0 and done % cadence.save_every == 0)
                if evaluate or save:
                    group.flush()
                    group.checkpoint(states, done, active, evaluate, save)
                for p, run in live:
                    if active[p]:
                        for hook in run.hooks:
                            hook.after_step(done, lambda p=p: program.take(states, p).params)
            group.flush()
        finally:
            batches.close()
            group.close()
        # The result of each run.
        return [None if run is None else run.result(lambda p=p: program.take(states, p), program.abstract_state, total)
                for p, run in enumerate(runs)]
    finally:
        for _, run in live:
            run.close()


class _Group:
    """The per-step bookkeeping of a group: batches, metrics, validation and checkpoints."""

    def __init__(self, program: Program, runs: Sequence[Run | None], frozen: Any, cadence: Cadence,
                 flops_per_token: float, peak_flops: float | None, label: str):
        self.program, self.runs, self.frozen, self.cadence = program, runs, frozen, cadence
        self.flops, self.peak, self.label = flops_per_token, peak_flops, label
        self.pending: list = []
        self.clock = time.perf_counter()
        self.window = {"tokens": 0, "seconds": 0.0, "losses": []}
        self.bar = progress_bar(cadence.total_steps, "step", label)
        self.bar.disable = self.bar.disable or not is_main()
        self.bar.update(min(run.start for run in runs if run is not None))

    def active_at(self, step: int) -> np.ndarray:
        return np.array([run is not None and run.start <= step for run in self.runs])

    def produce(self, first: int):
        """(device batch, per-slot BatchStats, active [P]) of steps first..total-1 (a generator)."""
        for step in range(first, self.cadence.total_steps):
            active = self.active_at(step)
            rows = [run.batches.batch(step) if on else None for run, on in zip(self.runs, active)]
            stats = [None if r is None else stats_of(r) for r in rows]
            yield self.program.device_batch(rows), stats, active

    def dispatched(self, step: int, first: int, device_metrics: dict, stats: list, active: np.ndarray) -> None:
        if step == first:
            self.clock = time.perf_counter()  # the first call compiles; time from its dispatch on
        self.pending.append((step + 1, device_metrics, stats, active))
        while len(self.pending) > 1:
            self._emit(*self.pending.pop(0))

    def flush(self) -> None:
        while self.pending:
            self._emit(*self.pending.pop(0))

    def _emit(self, done: int, device_metrics: dict, stats: list, active: np.ndarray) -> None:
        values = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in jax.device_get(device_metrics).items()}
        now = time.perf_counter()
        seconds = max(now - self.clock, 1e-9)
        self.clock = now
        tokens = 0
        for p, run in enumerate(self.runs):
            if run is None or not active[p]:
                continue
            tokens += stats[p].real_tokens
            run.record_step(done, values, p, stats[p], seconds, self.flops, self.peak)
        loss = float(np.mean(values["loss"][active]))
        self.window["tokens"] += tokens
        self.window["seconds"] += seconds
        self.window["losses"].append(loss)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / seconds:,.0f}")
        if done % self.cadence.log_every == 0 or done == self.cadence.total_steps:
            rate = self.window["tokens"] / max(self.window["seconds"], 1e-9)
            mfu = f"{100 * rate * self.flops / self.peak:.1f}%" if self.peak else "n/a"
            log.info("%s: step %d/%d loss %.4f lr %.3g grad_norm %.3f tokens/s %s mfu %s", self.label, done,
                     self.cadence.total_steps, float(np.mean(self.window["losses"])),
                     float(np.mean(values["lr"][active])), float(np.mean(values["grad_norm"][active])),
                     f"{rate:,.0f}", mfu)
            self.window.update(tokens=0, seconds=0.0, losses=[])

    def validate(self, states: Any, done: int, only_fresh: bool = False) -> list[float | None]:
        """Validation loss per slot (None: idle or not validating); written to the metrics logs
        (only_fresh: the step-0 validation, of runs that start fresh)."""
        if not any(run is not None and run.evaluating for run in self.runs):
            return [None] * len(self.runs)
        nll, count = self.program.evaluate(states, self.frozen, [() if run is None else run.eval_rows
                                                                 for run in self.runs])
        losses = []
        for p, run in enumerate(self.runs):
            loss = float(nll[p] / max(count[p], 1.0)) if run is not None and run.evaluating else None
            losses.append(loss)
            if loss is not None and only_fresh and run.start == 0:
                run.metrics.write({"step": 0, "val_loss": loss, "best": False})
        return losses

    def checkpoint(self, states: Any, done: int, active: np.ndarray, evaluate: bool, save: bool) -> None:
        """Validation (when due), the best step so far, and checkpoints of the runs that need one."""
        losses = self.validate(states, done) if evaluate else [None] * len(self.runs)
        for p, run in enumerate(self.runs):
            if run is None or not active[p]:
                continue
            loss = losses[p]
            best = loss is not None and run.validated(done, loss)
            if save or best:
                run.checkpoints.save(done, self.program.take(states, p), run.meta,
                                     loss if run.by_validation else None)
        self.clock = time.perf_counter()

    def close(self) -> None:
        self.bar.close()
