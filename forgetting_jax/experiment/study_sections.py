"""The sections of the studies run on a built forgetting matrix: predicting forgetting
(config.predict) and the replay experiment (config.replay). Part of the experiment config
(experiment/sections.py `Experiment`); see the package docstring."""

import dataclasses
from typing import Optional

from forgetting_jax.experiment.choices import REP_DOT_SELECT, REPLAY_PROTOCOLS
from forgetting_jax.experiment.fields import (like, predict_methods_problem, rep_dot_encoder_problem, setting,
                                              strategies_problem)


@dataclasses.dataclass(frozen=True)
class PredictSettings:
    """config.predict: the "Predicting forgetting" section of the report `run` writes
    (matrix/prediction_report.py): the paper's protocol on the matrix just built.

    report          run the protocol and add the section (off: the report describes the matrix only)
    methods         the methods compared: completion (additive, multiplicative, als, knn; logistic,
                    lgmf and lgmf_additive on a binary matrix, left out of the report on another), the
                    representation forecasters of prior work (rep_sim, rep_dot; they need
                    matrix.representations) and the reference forecasters (train_mean,
                    observed_mean, random)
    test_fraction   the share of tasks held out as test tasks (seeded by split_seed)
    k, seeds        observed entries per test task, and draws of them per test task
    threshold       forgetting above this counts as forgotten (F1, precision, recall, AUC); None:
                    0.5 on a binary matrix (matrix.metric=exact_match), else 0.0
    rank, reg       the rank of als and the ridge of every completion fit (predict.methods.CompletionConfig)
    test_tasks      test tasks by name (over test_fraction), e.g. the paper's (data/paper_tasks.py)
    train_tasks     the rows that train every method (empty: every row that is not a test task)
    rep_dot_*       rep_dot (predict/rep_dot.py, rep_dot_training.py; docs/prediction.md): steps,
                    lr (its head's), encoder (frozen | full | top:K: what of the encoder trains),
                    model (the encoder when it trains; "": the base), encoder_lr, batch (task
                    examples per step), eval_every, select (dev | test: where the step is chosen)

    These defaults are the defaults of the `predict` command and of the library's settings
    (predict/comparison.py ComparisonSettings, CompletionConfig, RepDotConfig); replay's k, rank and
    reg default to them too.
    """

    report: bool = True
    methods: tuple[str, ...] = setting(("additive", "multiplicative", "als", "knn", "logistic", "lgmf",
                                        "lgmf_additive", "rep_sim", "rep_dot", "train_mean", "observed_mean"),
                                       check=predict_methods_problem)
    test_fraction: float = setting(0.3, above=0, below=1)
    k: int = setting(30, at_least=1)
    seeds: int = setting(10, at_least=1)
    split_seed: int = 0
    threshold: Optional[float] = None
    rank: int = setting(5, at_least=1)
    reg: float = setting(1.0, at_least=0)
    rep_dot_steps: int = setting(5000, at_least=1)
    rep_dot_lr: float = setting(1e-3, above=0)
    test_tasks: tuple[str, ...] = ()
    train_tasks: tuple[str, ...] = ()
    rep_dot_encoder: str = setting("frozen", check=rep_dot_encoder_problem)
    rep_dot_model: str = ""
    rep_dot_encoder_lr: float = setting(1e-5, above=0)
    rep_dot_batch: int = setting(8, at_least=1)
    rep_dot_eval_every: int = setting(100, at_least=1)
    rep_dot_select: str = setting("dev", choices=REP_DOT_SELECT)


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """config.replay: the replay experiment of `forgetting-jax replay` (replay/experiment.py).

    protocol        final: as the paper's final code runs replay (AuCson/low-rank-forgetting
                    run_llm_ocl.py, data_utils/replay_helper.py): a replay run trains
                    floor(train.steps (1 + r)) steps, every run of the experiment (none included)
                    keeps its last step (train.result=last), and num_heldout=0 holds out 10,000
                    upstream examples (at most half of them); project: train.steps for every run
                    (or ceil(steps (1 + r)) with scale_steps), the config's train.result, 1,000
                    held out (replay/protocol.py). results.json and the report name the protocol
    test_tasks      the new tasks fine-tuned with replay; none of them may be a row of the matrix
                    (data.tasks), whose rows train the prediction
    strategies      which upstream examples to replay (replay/strategies.py):
                      none              plain fine-tuning (no replay)
                      random            uniform over the replay pool
                      predicted:METHOD  softmax(predicted forgetting / T), the row completed by
                                        METHOD (additive, multiplicative, als, knn) from k observed
                                        entries of the task's true row
                      ground_truth      softmax(true forgetting / T): the oracle
                      gt_mir:N          the final code's MIR baseline: the pool in random groups of
                                        N, the most forgotten (true row) of each group first
                      ppl_median        the examples whose base perplexity is nearest the pool's
                                        median, nearest first
                      grad_prod_neg     softmax(score / T), score = -(task gradient . example
                                        gradient) of the base model's gradients projected to
                                        gradient_dim dimensions, divided by its range over the pool
                      online:METHOD     random replay for the first `online_fraction` of the steps,
                                        then k pool examples are scored with the model of that
                                        step, the row completed and replayed by prediction
                      forecast          by the replay weights of replay.weights_file (a forecast
                                        file of `forgetting-jax forecast`), within the pool
                      top:STRATEGY      the STRATEGY's highest-scored examples in order (no
                                        sampling), e.g. top:predicted:additive, top:ground_truth
    ratio           r: one upstream example per 1/r task examples, a share r / (1 + r) of the
                    batch slots (the paper: 1/32 for base models, 1/8 for instruct models)
    scale_steps     protocol=project only. False: every strategy, none included, runs train.steps
                    optimizer steps, so a replay run sees fewer task examples; True: a replay run
                    runs ceil(train.steps (1 + r)) steps, so it sees the task examples of a run
                    without replay (it then also runs more steps than none)
    temperature     T of softmax(score / T)
    k               observed entries of a new task's row for the prediction
    num_heldout     upstream examples set aside (seeded): never replayed, they measure forgetting;
                    0: the protocol's (final: 10,000, project: 1,000; at most half the scored
                    examples)
    heldout_file    a file of held-out examples (the format of matrix.upstream, read with
                    matrix.upstream_kwargs) that measures forgetting instead of a split of the
                    upstream examples (then every scored upstream example may be replayed); with
                    matrix.metric=exact_match its prompts are answered too
    weights_file    a forecast file (F.jsonl of `forgetting-jax forecast`: lines with "id" and
                    "replay_weight"), {task} replaced by the task's name: the weights of strategy
                    forecast, and of `forgetting-jax finetune` with replay (replay/weights_file.py)
    gradient_dim    P of grad_prod_neg's projected gradients (matrix/gradients.py; the final code's 1024)
    online_fraction the share of the steps an online run replays at random before it predicts
    seed            the held-out split, observed entries and replay order
    rank, reg       settings of the completion methods (predict.methods.CompletionConfig)
    confidence      level of the confidence intervals in the report
    """

    protocol: str = setting("final", choices=REPLAY_PROTOCOLS)
    test_tasks: tuple[str, ...] = ()
    strategies: tuple[str, ...] = setting(("none", "random", "predicted:additive", "predicted:knn", "ground_truth"),
                                         check=strategies_problem)
    ratio: float = setting(1 / 32, above=0)
    scale_steps: bool = False
    temperature: float = setting(0.1, above=0)
    k: int = like(PredictSettings, "k", PredictSettings.k)
    num_heldout: int = setting(0, at_least=0)
    heldout_file: str = ""
    weights_file: str = ""
    gradient_dim: int = setting(1024, at_least=1)
    online_fraction: float = setting(0.1, at_least=0, at_most=1)
    seed: int = 0
    rank: int = like(PredictSettings, "rank", PredictSettings.rank)
    reg: float = like(PredictSettings, "reg", PredictSettings.reg)
    confidence: float = setting(0.95, above=0, below=1)
