"""Low-rank analysis of forgetting matrices: NaN-aware fits, statistics and figures."""
