"""The trainable encoder of rep_dot: which layers of a decoder train, and its last-token states.

`predict.rep_dot_encoder` names how much of the encoder trains (experiment/choices.py
`parse_rep_dot_encoder`):

  frozen   nothing: rep_dot reads the base model's representations from the matrix file
  full     every layer, the embedding and the final norm (the paper's final code:
           `freeze_lm: false`)
  top:K    the top K layers and the final norm; the embedding and the layers below run forward
           only, under `stop_gradient`, and hold no optimizer state

The decoder's parameters are split into a trainable tree and a frozen tree (`split_params`);
`merge_params` puts them back together for scoring. `last_hidden` runs the decoder on one row per
sequence and returns each row's final hidden state at its last token, [R, D] in fp32: with top:K,
the frozen part is a forward-only scan over the lower layers' stacked parameters, then the
trainable layers, then the final norm, the same layers and norm as models/decoder.py (a test
checks they agree with `Decoder.apply`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from forgetting_jax.models.attention import attention_inputs
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import REMAT_POLICIES, Decoder, DecoderLayer
from forgetting_jax.models.layers import dtype_of, make_norm, rotary_tables


def trained_layers(mode: int | None, num_layers: int) -> int:
    """How many of `num_layers` layers train: all for full (mode = num_layers), K for top:K."""
    if mode is None:
        return 0
    if not 1 <= mode <= num_layers:
        raise ValueError(f"predict.rep_dot_encoder=top:{mode}: the encoder has {num_layers} layer(s) "
                         f"(K must be 1..{num_layers})")
    return int(mode)


def split_params(params: dict, num_layers: int, k: int, full: bool, sliced: bool = True) -> tuple[dict, dict]:
    """(trainable, frozen) parameter trees of a decoder of `num_layers` layers: `full` trains
    everything but the untied output projection; else the top k stacked layers and the final norm
    train. sliced=False splits a tree of per-parameter specs or shardings the same way (the layer
    axis is never sharded, so both parts of a stack keep its spec)."""
    frozen = {"lm_head": params["lm_head"]} if "lm_head" in params else {}
    if full:
        return {name: value for name, value in params.items() if name != "lm_head"}, frozen
    cut = num_layers - k

    def part(lower: bool):
        if not sliced:
            return params["layers"]
        return jax.tree.map(lambda a: a[:cut] if lower else a[cut:], params["layers"])

    trainable = {"layers": part(False), "final_norm": params["final_norm"]}
    frozen["embedding"] = params["embedding"]
    if cut:
        frozen["lower_layers"] = part(True)
    return trainable, frozen


def merge_params(trainable: dict, frozen: dict) -> dict:
    """The decoder's parameter tree from `split_params`' two parts."""
    params = {name: value for name, value in trainable.items()}
    params.update({name: value for name, value in frozen.items() if name != "lower_layers"})
    if "lower_layers" in frozen:
        params["layers"] = jax.tree.map(lambda lo, hi: jnp.concatenate([lo, hi], axis=0),
                                        frozen["lower_layers"], trainable["layers"])
    return params


class _FinalNorm(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        return make_norm(self.config, "final_norm")(x)


def _layer_scan(config: ModelConfig, stacked: Any, x_RxLxD, cos_sin, attn_inputs):
    """The decoder's layers with stacked parameters `stacked` (leading layer axis) over x."""
    layer = DecoderLayer(config)

    def body(x, layer_params):
        return layer.apply({"params": layer_params}, x, cos_sin, attn_inputs)[0], None

    if config.remat_policy != "none":
        body = jax.checkpoint(body, prevent_cse=False, policy=REMAT_POLICIES[config.remat_policy])
    return jax.lax.scan(body, x_RxLxD, stacked)[0]


def hidden_states(config: ModelConfig, trainable: dict, frozen: dict, full: bool, tokens_RxL, positions_RxL,
                  segment_ids_RxL):
    """Final hidden states [R, L, D] (compute dtype) of the encoder split by `split_params`."""
    if full:
        return Decoder(config).apply({"params": merge_params(trainable, frozen)}, tokens_RxL, positions_RxL,
                                     segment_ids_RxL)
    x = jnp.take(frozen["embedding"], tokens_RxL, axis=0).astype(dtype_of(config.dtype))
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    cos_sin = rotary_tables(config, positions_RxL)
    attn = attention_inputs(config, segment_ids_RxL, positions_RxL)
    if "lower_layers" in frozen:
        x = jax.lax.stop_gradient(_layer_scan(config, frozen["lower_layers"], x, cos_sin, attn))
    x = _layer_scan(config, trainable["layers"], x, cos_sin, attn)
    return _FinalNorm(config).apply({"params": {"final_norm": trainable["final_norm"]}}, x)


def last_hidden(config: ModelConfig, trainable: dict, frozen: dict, full: bool, batch: dict):
    """fp32 final hidden state [R, D] at the last token of each row's one sequence (rows as
    data/packing.py lays them out, one segment per row; an empty row gives its first slot)."""
    hidden_RxLxD = hidden_states(config, trainable, frozen, full, batch["tokens"], batch["positions"],
                                 batch["segment_ids"])
    last_R = jnp.maximum((batch["segment_ids"] > 0).sum(1) - 1, 0)
    return jnp.take_along_axis(hidden_RxLxD, last_R[:, None, None], axis=1)[:, 0].astype(jnp.float32)
