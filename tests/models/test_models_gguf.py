"""GGUF files as model sources, without the real model: bad files, the missing extra, and the
q/k permutation undone exactly (tests/real_model/ converts the real SmolLM2 file)."""

import sys

import numpy as np
import pytest

from command_line import run_cli
from forgetting_jax.models.gguf_source import converted_dir, is_gguf, resolve_model_source
from forgetting_jax.models.gguf_weights import GgufError, hf_name, unpermute_rotary


def llama_cpp_permute(w, heads):
    """llama.cpp's convert_hf_to_gguf.py permutation of HF q/k rows (the one the reader undoes)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("heads, shape", [(4, (32, 12)), (3, (24, 8)), (2, (8,))])
def test_unpermute_rotary_inverts_llama_cpp_permutation(heads, shape):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    permuted = llama_cpp_permute(w, heads)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(unpermute_rotary(permuted, heads), w)


def test_tensor_names_map_to_hugging_face():
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"
    assert hf_name("rope_freqs.weight") is None


def test_directories_pass_through_and_gguf_paths_convert_beside_the_file(tmp_path):
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x")
    assert is_gguf(str(path)) and not is_gguf(str(tmp_path))
    assert converted_dir(str(path)).startswith(str(tmp_path / "m-"))
    assert converted_dir(str(path), root=str(tmp_path / "W" / "gguf")).startswith(str(tmp_path / "W" / "gguf"))


def test_not_a_gguf_file_is_a_clear_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(GgufError, match="broken.gguf"):
        resolve_model_source(str(bad))
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "text": "hello"}\n')
    assert run_cli("score", f"--model={bad}", f"--data={data}", f"--output={tmp_path / 'o.npz'}") != 0
    assert "broken.gguf" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
    with pytest.raises(GgufError, match="no such"):
        resolve_model_source(str(tmp_path / "missing.gguf"))


def test_missing_gguf_package_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(GgufError, match=r"forgetting_jax\[gguf\]"):
        resolve_model_source(str(path))


def test_unsupported_tokenizer_model_names_what_to_pass(monkeypatch):
    from forgetting_jax.models import gguf_tokenizer

    fields = {"tokenizer.ggml.model": "llama"}
    monkeypatch.setattr(gguf_tokenizer, "field", lambda reader, key, default=None: fields.get(key, default))
    with pytest.raises(GgufError, match=r"m\.gguf: tokenizer\.ggml\.model 'llama'.*--tokenizer=DIR"):
        gguf_tokenizer.build_tokenizer(None, "m.gguf")
