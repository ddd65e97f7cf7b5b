"""forgetting_jax: example-level forgetting matrices, their low-rank analysis and prediction."""

__version__ = "0.1.0"
