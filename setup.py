"""Installs forgetting_jax and its `forgetting-jax` command."""

from setuptools import find_packages, setup

setup(
    name="forgetting_jax",
    version="0.1.0",
    description=(
        "Measure, predict and prevent language-model forgetting with low-rank "
        "example associations, in JAX."
    ),
    python_requires=">=3.10",
    # resources/ holds data only (the demo corpus and tokenizer): listed as packages so that
    # setuptools ships them without warnings.
    packages=find_packages(include=["forgetting_jax", "forgetting_jax.*"])
    + ["forgetting_jax.resources", "forgetting_jax.resources.demo_tokenizer"],
    package_data={"forgetting_jax.resources": ["*"], "forgetting_jax.resources.demo_tokenizer": ["*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.6",
        "transformers>=4.45",
        "datasets>=2.19",
        "numpy>=1.26",
        "absl-py>=2.0",
        "ml_collections>=0.1.1",
        "safetensors>=0.4",
        "matplotlib>=3.7",
        "plotly>=5.20",  # report.html: standalone interactive figures
        "scipy>=1.10",
        "tqdm>=4.60",
        "jinja2>=3.1",  # transformers' chat templates
        "zstandard>=0.22",  # the Pile's .jsonl.zst files
    ],
    extras_require={
        # .gguf model files (llama.cpp's format) as model sources: numpy dequantization, no torch.
        "gguf": ["gguf>=0.16"],
        # accelerate: transformers' own GGUF loader, the reference the real-model tests compare with;
        # tensorboard: its own reader checks the event files the training runs write.
        "test": ["pytest>=7", "torch==2.13.0", "ruff>=0.6", "gguf>=0.16", "accelerate>=1.0", "tensorboard>=2.10"],
        "bench": ["torch==2.13.0", "scikit-surprise"],
    },
    entry_points={"console_scripts": ["forgetting-jax=forgetting_jax.cli:run"]},
)
