"""One entry point for "a model directory": a Hugging Face directory, one this project exported,
or a .gguf file (converted once into a directory beside it: models/gguf_source.py)."""

import os

from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.gguf_source import resolve_model_source
from forgetting_jax.models.hf_checkpoint import CheckpointError, load_hf_model


def load_model(model_dir: str, param_dtype: str = "float32", dtype: str = "float32",
               **overrides) -> tuple[ModelConfig, dict]:
    """(ModelConfig, numpy parameter tree) of the model in `model_dir` (a directory or a .gguf file)."""
    model_dir = resolve_model_source(model_dir)
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: no such model directory")
    config, params, _ = load_hf_model(model_dir, param_dtype=param_dtype, dtype=dtype, **overrides)
    return config, params


def load_tokenizer(path: str):
    """The Hugging Face tokenizer saved in `path` (a directory or a .gguf file; offline; a clear
    error when absent)."""
    import transformers

    path = resolve_model_source(path)

    try:
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: no loadable tokenizer ({err}); pass --tokenizer=DIR") from None
