"""The base model of an experiment: imported from a Hugging Face directory, or pre-trained.

  base_model(config, workdir)   -> BaseModel   model.base: hf (import model.hf_dir) | pretrain
  pretrain(config, workdir)     -> BaseModel   next-token loss on every token of corpus chunks,
                                               from random weights or from model.hf_dir

A base lives in W/base/<fp>/ (<fp>: the fingerprint of everything that changes it; its files:
WORKSPACE.md). A finished directory (fingerprint.json matching) is reused, never retrained; an interrupted
pre-training run resumes from its latest checkpoint (train/driver.py).
"""

import dataclasses
import functools
import logging
import os
from typing import Any, Sequence

import jax
from jax.sharding import Mesh

from forgetting_jax.experiment import Experiment
from forgetting_jax.models.config import ModelConfig, load_hf_config
from forgetting_jax.models.decoder import init_params, param_shapes
from forgetting_jax.models.gguf_source import workspace_model_source
from forgetting_jax.models.hf_checkpoint import load_hf_model
from forgetting_jax.models.loading import load_tokenizer
from forgetting_jax.train import checkpoints as ckpt_lib
from forgetting_jax.train import driver
from forgetting_jax.train.batches import make_batches, validation_rows
from forgetting_jax.train.inputs import corpus_examples, examples_fingerprint
from forgetting_jax.train.mesh import describe, make_mesh
from forgetting_jax.train.recipe import (check_tokens, peak_flops, result_settings, runtime_model_config,
                                         step_settings)
from forgetting_jax.train.step import compiled_steps, flops_per_token
from forgetting_jax.utils.file_cache import FileCache
from forgetting_jax.utils.fingerprint import file_fingerprint, fingerprint

log = logging.getLogger("forgetting_jax.train")

FORMAT_VERSION = 1  # of run.json inputs (base models and fine-tuning runs)


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """A finished base model in the workspace."""

    config: ModelConfig  # with this config's runtime settings (dtype, remat, scan, chunks)
    fingerprint: str
    directory: str  # W/base/<fp>
    params_dir: str  # orbax checkpoint of the parameters
    model_dir: str  # HF directory to score the base model with
    tokenizer_dir: str
    hf_config: dict  # config.json dict that fine-tuned exports start from




@functools.lru_cache(maxsize=8)
def tokenizer(path: str):
    """The tokenizer in `path`, loaded once per process."""
    return load_tokenizer(path)


_CORPUS = FileCache(size=2)


def _corpus(pc: Any, tokenizer_dir: str) -> dict:
    """The pre-training corpus as examples {"train", "validation"}, read and chunked once per
    process for the same settings, tokenizer and corpus file (while it is unchanged): deciding
    that a finished base is reused does not read it again."""
    return _CORPUS.get((pc, tokenizer_dir), pc.corpus,
                       lambda: corpus_examples(pc, tokenizer(tokenizer_dir), int(pc.row_length)))


def _hf_identity(hf_dir: str, mode: str) -> dict:
    """What identifies an imported HF directory: its config.json and its weights' bytes (content)
    or their names, sizes and modification times (metadata)."""
    names = sorted(n for n in os.listdir(hf_dir) if n.endswith((".safetensors", ".safetensors.index.json")))
    total = sum(os.path.getsize(os.path.join(hf_dir, n)) for n in names)
    if mode == "auto":
        mode = "content" if total < (2 << 30) else "metadata"
    if mode not in ("content", "metadata"):
        raise ValueError(f"model.hf_fingerprint {mode!r} is not one of auto, content, metadata")
    files = {}
    for name in names:
        path = os.path.join(hf_dir, name)
        info = os.stat(path)
        files[name] = file_fingerprint(path) if mode == "content" else [info.st_size, info.st_mtime_ns]
    return {"config": file_fingerprint(os.path.join(hf_dir, "config.json")), "files": files, "mode": mode}


def _architecture(model: Any, tokenizer) -> ModelConfig:
    """The ModelConfig of a model pre-trained from scratch, from config.model and the tokenizer."""
    vocab = int(model.vocab_size) or len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"model.vocab_size {vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return ModelConfig(
        family=model.family, vocab_size=vocab, hidden_size=int(model.hidden_size), num_layers=int(model.num_layers),
        num_heads=int(model.num_heads), num_kv_heads=int(model.num_kv_heads), head_dim=int(model.head_dim),
        mlp_dim=int(model.mlp_dim), norm_eps=float(model.norm_eps), rope_theta=float(model.rope_theta),
        tie_embeddings=bool(model.tie_embeddings), max_position_embeddings=int(model.max_position_embeddings),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, param_dtype=model.param_dtype)


def _base_from_record(config: Any, directory: str, record: dict) -> BaseModel:
    model_dir = record["model_dir"] if record.get("imported") else os.path.join(directory, "model")
    arch, hf = load_hf_config(model_dir, param_dtype=config.model.param_dtype)
    arch = arch.replace(tie_embeddings=bool(record["tie_embeddings"]))
    tokenizer_dir = record.get("tokenizer_dir") or model_dir
    return BaseModel(config=runtime_model_config(config.model, arch), fingerprint=record["fingerprint"],
                     directory=directory, params_dir=os.path.join(directory, "params"), model_dir=model_dir,
                     tokenizer_dir=tokenizer_dir, hf_config=hf)


def import_base(config: Experiment, workdir: str) -> BaseModel:
    """model.hf_dir as the base: its parameters copied once into an orbax checkpoint of the workspace
    (a .gguf file is converted first into the workspace's gguf/<stem>-<fp>/)."""
    hf_dir = os.path.abspath(workspace_model_source(config.model.hf_dir, workdir))
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise ValueError(f"model.hf_dir={hf_dir}: not a Hugging Face model directory (no config.json) "
                         "nor a .gguf file")
    tokenizer_dir = os.path.abspath(config.model.tokenizer or hf_dir)
    inputs = {"kind": "import", "version": FORMAT_VERSION, "hf_dir": _hf_identity(hf_dir, config.model.hf_fingerprint),
              "param_dtype": config.model.param_dtype}
    fp = fingerprint(inputs)
    directory = os.path.join(workdir, "base", fp)
    record = ckpt_lib.read_fingerprint(directory)
    if record is not None and record.get("fingerprint") == fp:
        return _base_from_record(config, directory, dict(record, tokenizer_dir=tokenizer_dir))
    log.info("importing %s as the base model into %s", hf_dir, directory)
    arch, params, _ = load_hf_model(hf_dir, param_dtype=config.model.param_dtype)
    driver.run_record(directory, inputs)
    ckpt_lib.save_params(os.path.join(directory, "params"), params)
    ckpt_lib.write_fingerprint(directory, fp, inputs, imported=True, model_dir=hf_dir,
                               tie_embeddings=arch.tie_embeddings)
    return _base_from_record(config, directory, {"fingerprint": fp, "imported": True, "model_dir": hf_dir,
                                                 "tie_embeddings": arch.tie_embeddings, "tokenizer_dir": tokenizer_dir})


def base_model(config: Experiment, workdir: str, mesh: Mesh | None = None) -> BaseModel:
    """The base model of `config` (reused when finished): model.base=hf imports model.hf_dir;
    model.base=pretrain pre-trains on config.pretrain.corpus."""
    if config.model.base == "pretrain":
        return pretrain(config, workdir, mesh)
    if config.model.base != "hf":
        raise ValueError(f"model.base {config.model.base!r} is not one of hf, pretrain")
    if not config.model.hf_dir:
        raise ValueError(f"config {config.name!r} fine-tunes an imported model: set "
                         "--config.model.hf_dir=DIR (a Hugging Face model directory)")
    return import_base(config, workdir)


def load_base_params(base: BaseModel, shardings: Any) -> Any:
    """The base parameters restored onto the mesh of `shardings` (a tree like the parameters)."""
    return ckpt_lib.restore_params(base.params_dir, ckpt_lib.abstract_tree(param_shapes(base.config), shardings))


def pretrain(config: Experiment, workdir: str, mesh: Mesh | None = None, hooks: Sequence[driver.Hook] = ()
             ) -> BaseModel:
    """Pre-trains the base model on config.pretrain.corpus (next-token loss on every token).

    Starts from random weights in the architecture of config.model, or, with model.hf_dir, from
    that model's weights (continued pre-training; its tokenizer unless model.tokenizer is set).
    """
    pc = config.pretrain
    if pc.method != "full":
        raise ValueError("pretrain.method must be full")
    from forgetting_jax.data.demo import tokenizer_path

    start_from = import_base(config, workdir) if config.model.hf_dir else None
    if start_from is not None:
        tokenizer_dir = start_from.tokenizer_dir
        arch = start_from.config.replace(param_dtype=config.model.param_dtype)
    else:
        tokenizer_dir = os.path.abspath(config.model.tokenizer or tokenizer_path())
    tok = tokenizer(tokenizer_dir)
    if start_from is None:
        arch = _architecture(config.model, tok)
    data = _corpus(pc, tokenizer_dir)
    check_tokens(data, arch.vocab_size, "corpus")
    arch_fields = {k: v for k, v in dataclasses.asdict(arch).items()
                   if k not in ("dtype", "remat_policy", "scan_unroll", "logits_chunks", "attention_impl")}
    inputs = {"kind": "pretrain", "version": FORMAT_VERSION, "model": arch_fields,
              "init": start_from.fingerprint if start_from is not None else "random",
              "tokenizer": file_fingerprint(tokenizer_dir), "train_data": examples_fingerprint(data["train"]),
              "validation_data": examples_fingerprint(data["validation"]), "train": result_settings(pc),
              "compute_dtype": config.model.dtype}
    fp = fingerprint(inputs)
    directory = os.path.join(workdir, "base", fp)
    record = ckpt_lib.read_fingerprint(directory)
    if record is not None and record.get("fingerprint") == fp:
        log.info("base model %s is already pre-trained; reusing it", directory)
        return _base_from_record(config, directory, record)
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    model_config = runtime_model_config(config.model, arch)
    settings, batch_settings = step_settings(pc, mesh)
    steps = compiled_steps(model_config, settings, mesh)
    driver.run_record(directory, inputs)
    log.info("pre-training %s (%.1fM parameters) on %d chunks (%d tokens) for %d steps on %s; run in %s",
             arch.family, arch.num_params / 1e6, len(data["train"]), sum(len(e) for e in data["train"]),
             pc.steps, describe(mesh), directory)

    def init_trainable():
        if start_from is not None:
            return load_base_params(start_from, steps.trainable_shardings)
        init = jax.jit(lambda key: init_params(model_config, key)[0], out_shardings=steps.trainable_shardings)
        return init(jax.random.key(int(pc.seed)))

    run = driver.Run("pretrain", directory, make_batches(data["train"], batch_settings),
                     validation_rows(data["validation"], settings.eval_rows, settings.row_length,
                                     int(pc.max_segments), int(pc.eval_every)), select_best=False, hooks=hooks,
                     divergence_hint=f"lower pretrain.lr (now {pc.lr:g}) or raise pretrain.warmup_steps "
                                     f"(now {pc.warmup_steps})")
    cadence = driver.Cadence(int(pc.steps), int(pc.eval_every), int(pc.save_every), int(pc.log_every))
    [(params, _)] = driver.train(driver.SingleTaskProgram(steps), [run], {}, init_trainable, cadence,
                                 flops_per_token(model_config, settings.row_length), peak_flops(mesh, pc),
                                 "pretrain")
    ckpt_lib.save_params(os.path.join(directory, "params"), params)
    driver.export_model(os.path.join(directory, "model"), arch, params,
                        base_config=start_from.hf_config if start_from is not None else None,
                        tokenizer_dir=tokenizer_dir, dtype=pc.export_dtype or None)
    driver.finish_record(directory, fp, inputs, bool(pc.keep_checkpoints), imported=False,
                         tie_embeddings=arch.tie_embeddings, steps=int(pc.steps))
    return _base_from_record(config, directory, {"fingerprint": fp, "tie_embeddings": arch.tie_embeddings})
