"""Batched greedy decoding with a KV cache, one compiled program per (batch, prompt bucket, budget).

Prompts are sorted by length and grouped `batch_size` at a time; each batch is left-padded
(right-aligned) to a bucket length P (a power of two, at least 16), so a run compiles once per
bucket, never per batch. The compiled program:

  prefill  the [B, P] prompt block through the decoder with an empty cache of S = P + T slots
           (T = max_new_tokens): keys and values of every prompt token land in slots [0, P); only
           the last slot's hidden state is projected to logits ([B, V] in fp32, never [B, P, V]);
  decode   a `lax.while_loop` of one-token steps (token [B, 1], its K/V written at slot P + t),
           argmax of the fp32 logits, until every row is done or T tokens are out. A row is done
           after an EOS token or when its tokens end with one of the stop sequences.

The cache lives inside the program (XLA updates it in place across the loop); row b's slot s
holds position s - pad[b] (models/decoder.py `Decoder._cached`). On a mesh the rows are split
over its "data" axis and the parameters replicated, as in scoring. Prompts longer than
max_position_embeddings - T keep their last tokens.

  Generator(config, params, mesh).generate(prompts, T, eos_token_ids, stop_token_sequences)
      -> ([new token ids per prompt, up to and without the first EOS], GenerateStats)
  generate_text(generator, tokenizer, texts, T, stop_strings, eos_ids)
      -> ([decoded completion per text, cut before the first stop string], GenerateStats)
      = encode_prompts (text -> ids; no special tokens added unless asked), Generator.generate with
        stop_token_sequences(tokenizer, stop_strings), decode_completions (ids -> text, cut)

The cache is allocated inside the compiled program (zeros of [layers, B, P + T, K, H] in the compute
dtype), so there is no buffer to donate: XLA reuses it in place across the loop.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import Decoder, unembedding

MIN_BUCKET = 16
UNUSED = -1  # the token slots of a row after it is done


@dataclasses.dataclass
class GenerateStats:
    """What a generation run did: for progress lines and benchmarks."""

    examples: int = 0
    new_tokens: int = 0  # tokens generated (up to each row's end)
    prompt_tokens: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


def bucket_length(length: int) -> int:
    """The prompt block length of a batch whose longest prompt has `length` tokens."""
    return max(MIN_BUCKET, 1 << max(int(length) - 1, 0).bit_length())


def _stop_table(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Stop sequences right-aligned in [Q, T] (-1 before each), and their lengths [Q]."""
    sequences = [list(s) for s in sequences if len(s)]
    width = -(-max((len(s) for s in sequences), default=1) // 8) * 8  # fixed shapes: few compilations
    count = -(-max(len(sequences), 1) // 4) * 4
    table = np.full((count, width), -1, np.int32)
    lengths = np.zeros(count, np.int32)
    for q, seq in enumerate(sequences):
        table[q, width - len(seq):] = seq
        lengths[q] = len(seq)
    return table, lengths


def _greedy_program(config: ModelConfig, max_new_tokens: int) -> Callable:
    """program(params, tokens_BxP, pad_B, eos_E, stops_QxW, stop_lengths_Q) -> new tokens [B, T]
    (UNUSED after a row is done)."""
    model = Decoder(config)
    dtype = jnp.dtype(config.dtype)
    T = max_new_tokens

    def next_token(params, hidden_BxD):
        logits_BxV = jnp.dot(hidden_BxD, unembedding(params, config).astype(hidden_BxD.dtype),
                             preferred_element_type=jnp.float32)
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

    def finished(out_BxT, t, token_B, eos_E, stops_QxW, stop_lengths_Q):
        """Rows whose token at step t is an EOS or completes a stop sequence."""
        W = stops_QxW.shape[1]
        idx_W = t - W + 1 + jnp.arange(W)
        window_BxW = jnp.where(idx_W[None] >= 0, out_BxT[:, jnp.clip(idx_W, 0, T - 1)], -2)
        matches_BxQ = jnp.all((stops_QxW[None] < 0) | (window_BxW[:, None, :] == stops_QxW[None]), axis=-1)
        matches_BxQ &= (stop_lengths_Q[None] > 0) & (stop_lengths_Q[None] <= t + 1)
        return jnp.any(token_B[:, None] == eos_E[None], axis=-1) | jnp.any(matches_BxQ, axis=-1)

    def program(params, tokens_BxP, pad_B, eos_E, stops_QxW, stop_lengths_Q):
        B, P_ = tokens_BxP.shape
        S = P_ + T
        c = config
        shape = (c.num_layers, B, S, c.num_kv_heads, c.head_dim)
        cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype), "index": jnp.int32(0), "pad": pad_B}
        hidden_BxPxD, cache = model.apply({"params": params}, tokens_BxP, cache=cache)
        token_B = next_token(params, hidden_BxPxD[:, -1])
        out_BxT = jnp.full((B, T), UNUSED, jnp.int32).at[:, 0].set(token_B)
        done_B = finished(out_BxT, 0, token_B, eos_E, stops_QxW, stop_lengths_Q)

        def cond(state):
            t, _, _, _, done_B = state
            return (t < T) & ~jnp.all(done_B)

        def body(state):
            t, token_B, cache, out_BxT, done_B = state
            hidden_Bx1xD, cache = model.apply({"params": params}, token_B[:, None], cache=cache)
            token_B = next_token(params, hidden_Bx1xD[:, 0])
            out_BxT = out_BxT.at[:, t].set(jnp.where(done_B, UNUSED, token_B))
            done_B = done_B | finished(out_BxT, t, token_B, eos_E, stops_QxW, stop_lengths_Q)
            return t + 1, token_B, cache, out_BxT, done_B

        _, _, _, out_BxT, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), token_B, cache, out_BxT, done_B))
        return out_BxT

    return program


_PROGRAMS: dict[tuple, Callable] = {}  # (config, T, mesh) -> jitted program, shared by Generators


def compiled_program(config: ModelConfig, max_new_tokens: int, mesh: Mesh | None = None) -> Callable:
    """The jitted greedy program (it compiles once per batch shape); rows over the mesh's "data"
    axis, parameters replicated."""
    key = (config, int(max_new_tokens), mesh)
    if key not in _PROGRAMS:
        kwargs = {}
        if mesh is not None:
            rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
            kwargs = dict(in_shardings=(replicated, rows, rows, replicated, replicated, replicated),
                          out_shardings=rows)
        _PROGRAMS[key] = jax.jit(_greedy_program(config, int(max_new_tokens)), **kwargs)
    return _PROGRAMS[key]


class Generator:
    """Greedy completions of token prompts with one model's weights.

    params: the parameter tree (numpy or jax arrays), cast to config.param_dtype. mesh: optional
    (one process); rows are split over its "data" axis, parameters replicated.
    """

    def __init__(self, config: ModelConfig, params, mesh: Mesh | None = None):
        self.config = config
        self.mesh = mesh
        dtype = jnp.dtype(config.param_dtype)
        if mesh is not None:
            replicated = NamedSharding(mesh, P())
            self.params = jax.tree.map(lambda x: jax.device_put(jnp.asarray(x, dtype), replicated), params)
        else:
            self.params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape["data"]

    def generate(self, prompts: Sequence[np.ndarray], max_new_tokens: int, eos_token_ids: Sequence[int] = (),
                 stop_token_sequences: Sequence[Sequence[int]] = (), batch_size: int = 64,
                 progress: Callable[[GenerateStats], None] | None = None) -> tuple[list[np.ndarray], GenerateStats]:
        """New token ids int32 [t_i] per prompt (input order): greedy, at most max_new_tokens, up to
        and without the first EOS (a stop sequence is kept). Prompts: int token ids [L_i], L_i >= 1."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        stats = GenerateStats()
        if not len(prompts):
            return [], stats
        keep = self.config.max_position_embeddings - max_new_tokens
        if keep < 1:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
                             f"{self.config.max_position_embeddings} positions")
        prompts = [np.asarray(p, np.int32)[-keep:] for p in prompts]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt has no tokens")
        B = min(int(batch_size), 1 << (len(prompts) - 1).bit_length())
        B = -(-B // self.num_devices) * self.num_devices
        eos = sorted(set(int(e) for e in eos_token_ids))
        eos_E = np.full(-(-max(len(eos), 1) // 4) * 4, -3, np.int32)  # -3: no token
        eos_E[: len(eos)] = eos
        stops_QxW, stop_lengths_Q = _stop_table(stop_token_sequences)
        program = compiled_program(self.config, max_new_tokens, self.mesh)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[np.ndarray] = [np.zeros(0, np.int32)] * len(prompts)
        start = time.perf_counter()
        eos = set(eos)

        def collect(rows: list[int], out) -> None:
            out_BxT = np.asarray(out)
            for r, i in enumerate(rows):
                tokens = out_BxT[r]
                tokens = tokens[: np.argmax(tokens == UNUSED)] if (tokens == UNUSED).any() else tokens
                ends = [t for t, token in enumerate(tokens.tolist()) if token in eos]
                stats.new_tokens += len(tokens)
                results[i] = tokens[: ends[0]] if ends else tokens
            stats.examples += len(rows)
            stats.batches += 1
            stats.seconds = time.perf_counter() - start
            if progress is not None:
                progress(stats)

        pending = None
        for first in range(0, len(order), B):
            rows = order[first:first + B]
            length = bucket_length(max(len(prompts[i]) for i in rows))
            tokens_BxP = np.zeros((B, length), np.int32)
            pad_B = np.full(B, length - 1, np.int32)  # filler rows: a one-token prompt
            for r, i in enumerate(rows):
                tokens_BxP[r, length - len(prompts[i]):] = prompts[i]
                pad_B[r] = length - len(prompts[i])
                stats.prompt_tokens += len(prompts[i])
            out = program(self.params, tokens_BxP, pad_B, eos_E, stops_QxW, stop_lengths_Q)  # asynchronous
            if pending is not None:
                collect(*pending)  # the previous batch's tokens, while this one runs
            pending = (rows, out)
        collect(*pending)
        stats.seconds = time.perf_counter() - start
        return results, stats


def eos_token_ids(config: ModelConfig, tokenizer=None, model_dir: str | None = None) -> list[int]:
    """The tokens that end a completion: the model config's EOS, the tokenizer's, and those of
    model_dir/generation_config.json (an int or a list), deduplicated."""
    ids = [config.eos_token_id, getattr(tokenizer, "eos_token_id", None)]
    path = os.path.join(model_dir, "generation_config.json") if model_dir else None
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get("eos_token_id")
        ids += value if isinstance(value, list) else [value]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def encode_prompts(tokenizer, prompts: Sequence[str], add_special_tokens: bool = False,
                   max_prompt_tokens: int | None = None) -> list[np.ndarray]:
    """Token ids int32 [L_i] of text prompts. add_special_tokens=False (the default): the text as it
    is, no BOS added (a chat template writes its own BOS); True: the tokenizer's special tokens, as
    `score` encodes lm text. max_prompt_tokens: only the last tokens are kept."""
    out = []
    for text in prompts:
        ids = np.asarray(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"], np.int32)
        out.append(ids[-max_prompt_tokens:] if max_prompt_tokens else ids)
    return out


def stop_token_sequences(tokenizer, stop_strings: Sequence[str]) -> list[list[int]]:
    """Each stop string's own tokens (no special tokens), for early stopping."""
    return [list(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stop_strings if s]


def decode_completions(tokenizer, new_ids: Sequence[np.ndarray], stop_strings: Sequence[str] = ()) -> list[str]:
    """The new tokens as text (special tokens skipped), each cut before the first stop string."""
    texts = []
    for ids in new_ids:
        text = tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=True)
        cut = min((text.index(stop) for stop in stop_strings if stop and stop in text), default=len(text))
        texts.append(text[:cut])
    return texts


def generate_text(generator: Generator, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  stop_strings: Sequence[str] = (), eos_ids: Sequence[int] = (), batch_size: int = 64,
                  progress: Callable[[GenerateStats], None] | None = None, *, add_special_tokens: bool = False,
                  max_prompt_tokens: int | None = None) -> tuple[list[str], GenerateStats]:
    """Greedy completions of text prompts: each prompt tokenized as it is (add_special_tokens=False:
    no BOS added, a chat template writes its own), the new tokens decoded without special tokens and
    cut before the first stop string (the earliest, whichever string it is). The stop strings' own
    tokens also end a row early (a stop string that the model spells with other tokens is still cut
    from the text, only later)."""
    token_prompts = encode_prompts(tokenizer, prompts, add_special_tokens, max_prompt_tokens)
    stops = stop_token_sequences(tokenizer, stop_strings)
    new, stats = generator.generate(token_prompts, max_new_tokens, eos_ids, stops, batch_size, progress)
    return decode_completions(tokenizer, new, stop_strings), stats
