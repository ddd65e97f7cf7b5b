"""Test-wide settings: 8 virtual CPU devices for sharding tests, strict rank promotion."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402


@pytest.fixture
def warnings_of_package():
    """WARNING messages of the `forgetting_jax` loggers during the test."""
    from test_support import package_warnings

    with package_warnings() as messages:
        yield messages


@pytest.fixture(scope="session")
def micro_matrix(tmp_path_factory):
    """(W, RunSummary): a workspace holding the micro demo's finished matrix (tests/micro_demo.py:
    base model, base scores, 3 fine-tuning runs, rows, analysis, report), built once per session.
    Read it in place; a test that changes a workspace works on a copy (micro_demo.copy_workspace)."""
    from forgetting_jax.matrix.run import run_pipeline
    from micro_demo import micro_experiment

    workdir = str(tmp_path_factory.mktemp("micro_matrix") / "W")
    return workdir, run_pipeline(micro_experiment(), workdir)
