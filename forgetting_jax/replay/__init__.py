"""Replay of upstream examples during fine-tuning: the weighted sampler, the mixture of a run's
batches, the strategies (random, predicted, ground truth, online) and the replay experiment."""
