"""MPT (ALiBi) against transformers' MptForCausalLM beyond the every-family tests (tiny_hf "mpt" runs
in test_models_parity.py and test_models_generate.py): ALiBi slopes for any head count, a model of
6 heads (not a power of two) with untied embeddings and clip_qkv: its logits and per-token NLL, a
packed row of three examples, the packed scorer's NLL and a packed row's gradients, greedy decoding
with the KV cache, export; a model pre-trained from scratch exports too; what the decoder does not
compute is refused by its config.json field, and cuDNN attention by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from forgetting_jax.models import alibi, attention, lm_head
from forgetting_jax.models.config import ConfigError, ModelConfig, from_hf_dict
from forgetting_jax.models.decoder import Decoder, param_shapes, unembedding
from forgetting_jax.models.generate import Generator
from forgetting_jax.models.hf_checkpoint import export_hf_model, load_hf_model
from forgetting_jax.score.scorer import Scorer, ScoreShape
from tiny_hf import hf_mean_nll, torch_logits

ROWS, LENGTH = 3, 32  # every forward pass of a model: one shape


@pytest.mark.parametrize("num_heads", [1, 2, 3, 4, 5, 6, 7, 12, 16, 24, 32, 48, 64])
def test_alibi_slopes_match_transformers(num_heads):
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    want = -build_mpt_alibi_tensor(num_heads, 2)[:, 0, 0].numpy()  # bias of the key one before the last
    np.testing.assert_array_equal(alibi.slopes(num_heads), want)


@pytest.fixture(scope="module")
def mpt6(tmp_path_factory):
    """A tiny MPT of 6 heads, untied lm_head and clip_qkv, saved by transformers; with our import."""
    out = str(tmp_path_factory.mktemp("mpt6"))
    config = transformers.MptConfig(vocab_size=96, d_model=48, n_heads=6, n_layers=2, max_seq_len=256,
                                    layer_norm_epsilon=1e-4, tie_word_embeddings=False,
                                    attn_config=dict(clip_qkv=0.4), attn_implementation="eager")
    torch.manual_seed(1)
    model = transformers.MptForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.2 if p.ndim == 1 else 1.0 / p.shape[-1] ** 0.5
            p.copy_((1.0 if p.ndim == 1 else 0.0) + scale * torch.randn_like(p))
    model = model.eval()
    model.save_pretrained(out)
    model.generation_config.eos_token_id = None
    ours, params, hf = load_hf_model(out)
    return out, model, ours, params, hf


@functools.partial(jax.jit, static_argnums=0)
def _hidden(config, params, tokens, positions, segment_ids):
    return Decoder(config).apply({"params": params}, tokens, positions, segment_ids)


def _logits(config, params, tokens, positions=None, segment_ids=None):
    """Logits [B, LENGTH, V] of B <= ROWS rows, run as ROWS rows with positions and segment ids (one
    compilation per model for every call)."""
    B = len(tokens)
    padded = lambda x, fill: np.concatenate([np.asarray(x), np.broadcast_to(fill, (ROWS - B, LENGTH))])  # noqa: E731
    positions = np.broadcast_to(np.arange(LENGTH), (B, LENGTH)) if positions is None else positions
    segment_ids = np.ones((B, LENGTH), np.int32) if segment_ids is None else segment_ids
    hidden = _hidden(config, params, *(jnp.asarray(padded(x, f), jnp.int32) for x, f in
                                       ((tokens, 0), (positions, np.arange(LENGTH)), (segment_ids, 1))))
    return np.asarray(lm_head.logits(hidden, unembedding(params, config)))[:B]


def test_import_reads_the_mpt_fields(mpt6):
    _, _, config, params, _ = mpt6
    assert (config.family, config.num_heads, config.num_kv_heads, config.head_dim, config.mlp_dim) == ("mpt", 6, 6,
                                                                                                      8, 192)
    assert config.clip_qkv == pytest.approx(0.4) and config.norm_eps == pytest.approx(1e-4)
    assert not config.tie_embeddings and "lm_head" in params and config.max_position_embeddings == 256
    assert set(params["layers"]["attn_norm"]) == {"scale"} and "gate" not in params["layers"]["mlp"]


def test_logits_and_token_nll_match_transformers(mpt6):
    _, model, config, params, _ = mpt6
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, LENGTH))
    expected = torch_logits(model, tokens)
    got = _logits(config, params, tokens)
    assert np.abs(expected).max() > 1.0, "the test model is too close to zero to tell anything"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    logp = torch.log_softmax(torch.as_tensor(expected[:, :-1]), -1)
    want = -logp.gather(2, torch.as_tensor(tokens[:, 1:])[..., None])[..., 0].numpy()
    ours = -jax.nn.log_softmax(jnp.asarray(got[:, :-1]), -1)
    np.testing.assert_allclose(np.take_along_axis(np.asarray(ours), tokens[:, 1:, None], -1)[..., 0], want, atol=1e-4)


def test_three_packed_examples_score_as_each_alone(mpt6):
    """ALiBi distances within each segment: a packed example's logits are its logits alone."""
    _, _, config, params, _ = mpt6
    rng = np.random.default_rng(2)
    lengths = (5, 11, 9)
    examples = [rng.integers(0, config.vocab_size, n) for n in lengths]
    pad = LENGTH - sum(lengths)
    row = np.concatenate(examples + [np.zeros(pad, int)])
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(pad, int)])
    segments = np.concatenate([np.full(n, s + 1) for s, n in enumerate(lengths)] + [np.zeros(pad, int)])
    packed = _logits(config, params, row[None], positions[None], segments[None])[0]
    alone = np.zeros((3, LENGTH), np.int64)
    for r, ids in enumerate(examples):
        alone[r, :len(ids)] = ids
    separate = _logits(config, params, alone)
    start = 0
    for r, n in enumerate(lengths):
        np.testing.assert_allclose(packed[start:start + n], separate[r, :n], atol=1e-5)
        start += n


def test_the_packed_scorer_gives_transformers_nll_and_packing_keeps_gradients(mpt6):
    """The scorer's rows (several examples each) give each example's transformers NLL; the loss of
    a packed row has the gradient of the same examples in rows of their own."""
    _, model, config, params, _ = mpt6
    rng = np.random.default_rng(7)
    examples = []
    for n in (4, 13, 7, 20, 9, 2):
        mask = np.ones(n, bool)
        mask[0] = False
        examples.append((rng.integers(0, config.vocab_size, n).astype(np.int32), mask))
    nll, _, stats = Scorer(config, params).score(examples, ScoreShape(rows_per_batch=2, row_length=LENGTH,
                                                                      max_segments=4))
    assert stats.examples == len(examples) and stats.slot_tokens < len(examples) * LENGTH  # rows were packed
    np.testing.assert_allclose(nll, [hf_mean_nll(model, ids, mask) for ids, mask in examples], atol=1e-4)

    a, b = examples[1][0], examples[2][0]  # 13 and 7 tokens, in one row (a second row of padding: one shape)
    packed = np.zeros((2, LENGTH), np.int32)
    packed[0, :20] = np.concatenate([a, b])
    positions = np.zeros((2, LENGTH), np.int32)
    positions[0, :20] = np.concatenate([np.arange(13), np.arange(7)])
    segments = np.zeros((2, LENGTH), np.int32)
    segments[0, :20] = np.repeat([1, 2], [13, 7])
    apart = np.zeros((2, LENGTH), np.int32)
    apart[0, :13], apart[1, :7] = a, b

    def loss(params, tokens, positions, segments, weights_Bx_L1):  # weights of the targets tokens[:, 1:]
        hidden = Decoder(config).apply({"params": params}, tokens, positions, segments)
        nll = lm_head.token_nll(hidden[:, :-1], unembedding(params, config), tokens[:, 1:], config.logits_chunks)
        return jnp.sum(nll * weights_Bx_L1)

    grad = jax.jit(jax.grad(loss))
    weights_packed = np.zeros((2, LENGTH - 1), np.float32)
    weights_packed[0, :12], weights_packed[0, 13:19] = 1, 1  # the targets within a, within b
    weights_apart = np.zeros((2, LENGTH - 1), np.float32)
    weights_apart[0, :12], weights_apart[1, :6] = 1, 1
    packed_grad = grad(params, packed, positions, segments, weights_packed)
    apart_grad = grad(params, apart, np.broadcast_to(np.arange(LENGTH), (2, LENGTH)), np.ones((2, LENGTH), np.int32),
                      weights_apart)
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5, rtol=1e-4), packed_grad, apart_grad)


def _hf_generate(model, prompts, new):
    """transformers' greedy tokens of left-padded prompts (one batch)."""
    longest = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), longest), np.int64)
    mask = np.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, longest - len(p):], mask[r, longest - len(p):] = p, 1
    with torch.no_grad():
        out = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), do_sample=False,
                             max_new_tokens=new, min_new_tokens=new, eos_token_id=None, pad_token_id=0)
    return [row[longest:].numpy().astype(np.int32) for row in out]


def test_greedy_decoding_with_the_cache_matches_transformers(mpt6):
    _, model, config, params, _ = mpt6
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, config.vocab_size, n).astype(np.int32) for n in (2, 9, 17)]
    ours, _ = Generator(config, params).generate(prompts, 10, batch_size=4)
    for prompt, got in zip(prompts, ours):  # each alone, and all three as one left-padded batch
        np.testing.assert_array_equal(got, _hf_generate(model, [prompt], 10)[0])
    for got, want in zip(ours, _hf_generate(model, prompts, 10)):
        np.testing.assert_array_equal(got, want)


def test_export_of_an_untied_model_loads_in_transformers(mpt6, tmp_path):
    _, model, config, params, hf = mpt6
    out = str(tmp_path / "exported")
    export_hf_model(out, config, params, base_config=hf)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    assert type(reloaded).__name__ == "MptForCausalLM" and reloaded.config.attn_config.clip_qkv == pytest.approx(0.4)
    tokens = np.random.default_rng(4).integers(0, config.vocab_size, (1, 12))
    np.testing.assert_allclose(torch_logits(reloaded, tokens), torch_logits(model, tokens), atol=1e-5)
    config2, params2, _ = load_hf_model(out)
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_a_model_pretrained_from_scratch_exports_without_a_base_config(tmp_path):
    config = ModelConfig(family="mpt", vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=4,
                         head_dim=8, mlp_dim=128, norm_eps=1e-5, max_position_embeddings=128, tie_embeddings=True)
    rng = np.random.default_rng(6)  # random parameters without compiling an init
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(config))
    export_hf_model(str(tmp_path), config, params)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    tokens = np.random.default_rng(5).integers(0, 64, (2, LENGTH))
    np.testing.assert_allclose(_logits(config, params, tokens), torch_logits(reloaded, tokens), atol=1e-4, rtol=1e-4)


MPT_JSON = dict(model_type="mpt", d_model=32, n_heads=4, n_layers=1, vocab_size=64, expansion_ratio=4,
                max_seq_len=128, no_bias=True, attn_config=dict(alibi=True, alibi_bias_max=8))


@pytest.mark.parametrize("change, field", [
    (dict(no_bias=False), "no_bias"),
    (dict(expansion_ratio=2), "expansion_ratio"),
    (dict(logit_scale=0.5), "logit_scale"),
    (dict(norm_type="low_precision_rmsnorm"), "norm_type"),
    (dict(ffn_config=dict(ffn_type="mptglu")), "ffn_config.ffn_type"),
    (dict(attn_config=dict(alibi=False)), "attn_config.alibi"),
    (dict(attn_config=dict(alibi_bias_max=16)), "attn_config.alibi_bias_max"),
    (dict(attn_config=dict(qk_ln=True)), "attn_config.qk_ln"),
    (dict(attn_config=dict(softmax_scale=0.1)), "attn_config.softmax_scale"),
    (dict(attn_config=dict(attn_type="multiquery_attention")), "attn_config.attn_type"),
    (dict(attn_config=dict(prefix_lm=True)), "attn_config.prefix_lm"),
])
def test_what_the_decoder_does_not_compute_is_refused_by_field(change, field):
    config = from_hf_dict(MPT_JSON)
    assert config.alibi and config.norm_kind == "layernorm_scale" and config.tie_embeddings
    with pytest.raises(ConfigError, match=f"field {field}="):
        from_hf_dict(dict(MPT_JSON, **change))


def test_cudnn_is_refused_and_auto_picks_xla(monkeypatch):
    config = from_hf_dict(MPT_JSON)
    assert attention.resolve(config) == "xla"
    with pytest.raises(ConfigError, match="attention_impl=cudnn.*ALiBi"):
        config.replace(attention_impl="cudnn")
    monkeypatch.setenv("FJ_ATTENTION", "cudnn")
    with pytest.raises(ConfigError, match="cannot run the mpt family"):
        attention.resolve(config)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        config.replace(num_kv_heads=2)
    with pytest.raises(ConfigError, match="mlp_dim"):
        config.replace(mlp_dim=64)
