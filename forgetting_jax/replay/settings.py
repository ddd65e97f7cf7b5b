"""The `replay` section of an experiment config: the replay experiment of `forgetting-jax replay`.

replay  test_tasks      the new tasks fine-tuned with replay; none of them may be a row of the
                        matrix (config.data.tasks), whose rows train the prediction
        strategies      which upstream examples to replay (replay/strategies.py):
                          none              plain fine-tuning (no replay)
                          random            uniform over the replay pool
                          predicted:METHOD  softmax(predicted forgetting / T), the row completed by
                                            METHOD (additive, multiplicative, als, knn) from k
                                            observed entries of the task's true row
                          ground_truth      softmax(true forgetting / T): the oracle
                          online:METHOD     random replay for the first `online_fraction` of the
                                            steps, then k pool examples are scored with the model of
                                            that step, the row completed and replayed by prediction
                          top:STRATEGY      the STRATEGY's highest-scored examples in order (no
                                            sampling), e.g. top:predicted:additive, top:ground_truth
        ratio           r: one upstream example per 1/r task examples; the run's steps are scaled by
                        (1 + r) so it sees the same task examples as a run without replay (the paper:
                        1/32 for base models, 1/8 for instruct models)
        temperature     T of softmax(score / T)
        k               observed entries of a new task's row for the prediction
        num_heldout     upstream examples set aside (seeded): never replayed, they measure forgetting
        online_fraction the share of the steps an online run replays at random before it predicts
        seed            the held-out split, observed entries and replay order
        rank, reg       settings of the completion methods (predict.methods.CompletionConfig)
        confidence      level of the confidence intervals in the report
"""

from ml_collections import ConfigDict


def replay_defaults() -> ConfigDict:
    return ConfigDict(dict(
        test_tasks=(), strategies=("none", "random", "predicted:additive", "predicted:knn", "ground_truth"),
        ratio=1 / 32, temperature=0.1, k=30, num_heldout=1000, online_fraction=0.1, seed=0, rank=5, reg=1.0,
        confidence=0.95,
    ))
