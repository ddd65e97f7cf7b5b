"""The sections of an experiment config: one frozen dataclass each, with the rules of every field
(allowed values, ranges) and the paper's recipe as the defaults. See the package docstring."""

import dataclasses
from typing import Optional

from forgetting_jax.experiment.choices import (ANSWER_KINDS, ATTENTION_IMPLS, BASES, BATCHINGS, CPU_COLLECTIVES,
                                               DATA_SOURCES, DTYPES, EM_COLUMNS, EXPORT_DTYPES, FAMILIES,
                                               HF_FINGERPRINTS, LORA_TARGETS, METHODS, METRICS, ON_DIVERGENCE,
                                               REMAT_POLICIES, RESULT_STEPS, TASK_READERS, UPSTREAM_KINDS)
from forgetting_jax.experiment.fields import (demo_tasks_problem, dimension, fill_or_positive, like, setting,
                                              upstream_kwargs_problem)
from forgetting_jax.experiment.study_sections import PredictSettings, ReplaySettings
from forgetting_jax.utils.runtime import MODES


# Sections --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """config.model: the base model; the architecture of one pre-trained from scratch; compute settings.

    base            hf: the base is hf_dir, imported; pretrain: the base is pre-trained on
                    pretrain.corpus, from hf_dir's weights when set, else from random weights in
                    the architecture below
    hf_dir          a Hugging Face model directory (config.json, safetensors, tokenizer), or a
                    .gguf file (converted once into the workspace's gguf/; the gguf extra)
    tokenizer       tokenizer directory (None: hf_dir's, else the demo tokenizer)
    hf_fingerprint  how an imported base is identified: content (hash every byte), metadata
                    (config.json + names, sizes and mtimes of weight files) or auto (content below
                    2 GiB)
    family, vocab_size (0: the tokenizer's), hidden_size, num_layers, num_heads, num_kv_heads,
    head_dim, mlp_dim, max_position_embeddings, rope_theta, tie_embeddings, norm_eps
                    the architecture of a model pre-trained from scratch (ignored with hf_dir)
    param_dtype     master weights and optimizer state (float32)
    dtype           compute dtype of matrix products (bfloat16)
    remat_policy    none | full | dots | dots_no_batch (activation checkpointing per layer)
    scan_layers     True: one compiled layer body scanned over depth; False: the layers unrolled;
                    None: by backend (models.config.scan_unroll: unrolled on GPUs, scanned elsewhere)
    logits_chunks   token chunks of the vocabulary projection
    attention_impl  auto | xla | cudnn (models/attention.py; auto: cuDNN on GPUs where it applies)
    """

    hf_dir: Optional[str] = None
    base: str = setting("hf", choices=BASES)
    tokenizer: Optional[str] = None
    hf_fingerprint: str = setting("auto", choices=HF_FINGERPRINTS)
    family: str = setting("llama", choices=FAMILIES)
    vocab_size: int = setting(0, at_least=0)
    hidden_size: int = dimension(128)
    num_layers: int = dimension(2)
    num_heads: int = dimension(4)
    num_kv_heads: int = dimension(4)
    head_dim: int = dimension(32)
    mlp_dim: int = dimension(512)
    max_position_embeddings: int = dimension(4096)
    rope_theta: float = setting(10000.0, above=0)
    tie_embeddings: bool = False
    norm_eps: float = setting(1e-6, above=0)
    param_dtype: str = setting("float32", choices=DTYPES)
    dtype: str = setting("bfloat16", choices=DTYPES)
    remat_policy: str = setting("none", choices=REMAT_POLICIES)
    scan_layers: Optional[bool] = None
    logits_chunks: int = setting(4, at_least=1)
    attention_impl: str = setting("auto", choices=ATTENTION_IMPLS)


@dataclasses.dataclass(frozen=True)
class MeshSettings:
    """config.mesh: the device mesh (train/mesh.py).

    data, fsdp, tensor  axis sizes; -1 fills the devices the others leave (one axis at most)
    num_devices         use the first N devices (-1: all)
    """

    data: int = setting(-1, check=fill_or_positive)
    fsdp: int = setting(1, check=fill_or_positive)
    tensor: int = setting(1, check=fill_or_positive)
    num_devices: int = setting(-1, check=fill_or_positive)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """config.data: the tasks of the experiment and their examples (train/inputs.py).

    source               demo (the bundled task suite) | files
    tasks                the task names of the experiment (the pipeline fine-tunes each; empty:
                         every task found)
    reader               how task files are read: flan, tulu, dolly, mmlu, bbh, truthfulqa, chat
    train_path           the task file(s); "{task}" in the path: one file per task
    validation_path      validation file(s) (empty: split from the training records)
    validation_fraction  the share of the records split off for validation
    max_validation       validation examples per task at most (0: no limit)
    max_train            training examples per task at most (0: all)
    reader_kwargs        options of the reader (those it takes)
    skip_bad             skip malformed records (counted) instead of failing
    seed                 the validation split and subsamples
    max_length           tokens kept per example (the last ones)
    """

    source: str = setting("demo", choices=DATA_SOURCES)
    tasks: tuple[str, ...] = ()
    reader: str = setting("flan", choices=TASK_READERS)
    train_path: str = ""
    validation_path: str = ""
    validation_fraction: float = setting(0.1, at_least=0, below=1)
    max_validation: int = setting(200, at_least=0)
    max_train: int = setting(0, at_least=0)
    reader_kwargs: dict = setting(factory=dict)
    skip_bad: bool = False
    seed: int = 0
    max_length: int = setting(1024, at_least=1)


@dataclasses.dataclass(frozen=True)
class TrainLoraSettings:
    """config.train.lora: LoRA adapters (train.method=lora; train/lora.py).

    rank, alpha     adapter rank and scale (alpha / rank)
    dropout         dropout on the adapters' input
    lr              peak learning rate of LoRA training
    targets         the projections adapted: q, k, v, o, gate, up, down
    """

    rank: int = setting(64, at_least=1)
    alpha: float = setting(16.0, above=0)
    dropout: float = setting(0.1, at_least=0, below=1)
    lr: float = setting(1e-4, at_least=0)
    targets: tuple[str, ...] = setting(LORA_TARGETS, choices=LORA_TARGETS)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """config.train: fine-tuning (the paper's fine-tuning recipe); also the fields of pretrain.

    method          full | lora
    lr              peak learning rate of full fine-tuning (LoRA uses lora.lr)
    steps           optimizer steps
    warmup_steps    linear warm-up, then linear decay to 0 at `steps`
    batch_size      examples per step (batching=examples) or packed rows per step (batching=rows)
    batching        examples | rows  (see train/batches.py)
    row_length      tokens per packed row (at least data.max_length for examples batching)
    max_segments    examples per packed row at most
    micro_rows      rows per micro-batch (gradient accumulation unit), rounded up to a multiple of
                    the mesh's data x fsdp size
    grad_clip, weight_decay, b1, b2, eps   AdamW and clipping
    seed            data order and LoRA dropout
    eval_every      validation every N steps (and at the last step); 0: never
    result          best: the step with the lowest validation loss is the run's result (the paper's
                    first code); last: the final step's parameters (its final code; the final
                    replay protocol's runs)
    eval_rows       rows per validation batch
    save_every      also checkpoint every N steps between validations (0: only at validations)
    keep_checkpoints  keep the orbax training checkpoints of a finished run (else only its model)
    export_dtype    dtype of the exported model's weights (empty: param_dtype)
    log_every       log line every N steps
    peak_flops      peak FLOP/s per device for the MFU estimate (0: from the device kind)
    lora            TrainLoraSettings: rank, alpha, dropout, lr, targets
    """

    method: str = setting("full", choices=METHODS)
    lr: float = setting(2e-6, at_least=0)
    steps: int = setting(1000, at_least=1)
    warmup_steps: int = setting(10, at_least=0)
    batch_size: int = setting(8, at_least=1)
    batching: str = setting("examples", choices=BATCHINGS)
    row_length: int = setting(1024, at_least=1)
    max_segments: int = setting(64, at_least=1)
    micro_rows: int = setting(1, at_least=1)
    grad_clip: float = setting(1.0, at_least=0)
    weight_decay: float = setting(0.0, at_least=0)
    b1: float = setting(0.9, at_least=0, below=1)
    b2: float = setting(0.999, at_least=0, below=1)
    eps: float = setting(1e-8, at_least=0)
    seed: int = 0
    eval_every: int = setting(100, at_least=0)
    result: str = setting("best", choices=RESULT_STEPS)
    eval_rows: int = setting(8, at_least=1)
    save_every: int = setting(0, at_least=0)
    keep_checkpoints: bool = False
    export_dtype: str = setting("", choices=EXPORT_DTYPES)
    log_every: int = setting(10, at_least=1)
    peak_flops: float = setting(0.0, at_least=0)
    lora: TrainLoraSettings = setting(factory=TrainLoraSettings)


@dataclasses.dataclass(frozen=True)
class PretrainSettings(TrainSettings):
    """config.pretrain: pre-training (`forgetting-jax pretrain`; method full only). Every field of
    TrainSettings, with the defaults of pre-training a small model on packed rows (lr 1e-3, 100
    warm-up steps, batching rows, 8 rows per step in one micro-batch, weight decay 0.01, no
    validation), and:

    corpus               the language-model text files to pre-train on (None: the bundled corpus)
    max_examples         corpus examples (chunks) at most (0: all)
    validation_fraction  the share of the corpus held out for validation
    max_validation       validation examples at most (0: no limit)
    demo_tasks           tasks of the bundled suite whose training examples (chat, loss on the
                         responses) join the corpus: a demo base that answers them (the
                         instruction-tuned base of the exact-match demo)
    """

    lr: float = like(TrainSettings, "lr", 1e-3)
    warmup_steps: int = like(TrainSettings, "warmup_steps", 100)
    batching: str = like(TrainSettings, "batching", "rows")
    micro_rows: int = like(TrainSettings, "micro_rows", 8)
    weight_decay: float = like(TrainSettings, "weight_decay", 0.01)
    eval_every: int = like(TrainSettings, "eval_every", 0)
    method: str = setting("full", choices=("full",))
    corpus: Optional[str] = None
    max_examples: int = setting(0, at_least=0)
    validation_fraction: float = setting(0.0, at_least=0, below=1)
    max_validation: int = setting(200, at_least=0)
    demo_tasks: tuple[str, ...] = setting((), check=demo_tasks_problem)


@dataclasses.dataclass(frozen=True)
class MatrixSettings:
    """config.matrix: which upstream examples, how they are scored (matrix/upstream.py, matrix/rows.py).

    upstream          demo: chunks of the bundled corpus; demo_tasks: training examples of the
                      bundled suite's tasks `upstream_tasks` (exact answers); lm: language-model text files (Dolma
                      style, chunked to max_length); chat: {id, messages} files; or a source
                      reader of `data.sources.READERS` (upstream, tulu, dolly, flan, mmlu, bbh,
                      truthfulqa)
    upstream_path     the file (or `datasets` name) for every upstream kind but demo
    upstream_kwargs   options of the upstream reader (those it takes; unset ones are left to the
                      reader): duplicates ("error", the reader's default, or "skip": skip and count
                      repeated document ids), source_field (a dotted field path, e.g.
                      "meta.pile_set_name"), qualify_ids (prefix document ids with their source;
                      default: Dolma-layout rows only)
    num_upstream      N: upstream examples kept (a seeded subsample with stable ids; 0: all)
    seed              the subsample's seed
    max_length        tokens kept per upstream example
    dtype             scoring dtype (float32 or bfloat16; float16 is read too)
    tokens_per_batch  token slots per compiled scoring call
    keep_models       also export each task's fine-tuned model (W/tasks/<task>/<fp>/model/); rows are scored
                      from the parameters in memory either way
    max_rank          largest rank of the SVD fits in the report
    parallel_tasks    P: tasks fine-tuned at once in one compiled step (train/multitask.py); 1: one
                      task at a time
    task_submeshes    T: with P > 1, the devices split into T sub-meshes (a `task` mesh axis), P / T
                      tasks on each; 1: all P tasks on every device
    representations   also write the base model's representations into the matrix file (for the
                      representation forecasters rep_sim and rep_dot, matrix/representations.py):
                      mean-pooled and last-token final hidden states of every upstream example and
                      of up to `task_examples` training examples of each task (cached by fingerprint)
    task_examples     S: training examples of each task represented (a seeded subsample when a task
                      has more)
    upstream_tasks    the suite tasks of upstream=demo_tasks
    metric            nll: Z = ft_nll - base_nll (log-perplexity forgetting); exact_match: each
                      model also answers every upstream prompt by greedy decoding, and Z is the
                      binary drop D[i, j] = 1[right before, wrong after fine-tuning on task i]
                      (matrix/answers.py); the upstream examples need reference answers (chat
                      records: demo_tasks, mmlu, bbh, truthfulqa, tulu, flan, dolly, chat)
    answer_kind       how answers are extracted and compared (score/exact_match.py): auto (by
                      upstream), mmlu, bbh, truthfulqa, short, demo
    max_new_tokens    the greedy answer budget (0: the paper's 512 where the model's positions leave room
                      after the longest prompt, else the room or the kind's own: exact_match.answer_budget)
    em_columns        exact-match columns: base_correct (the paper's final code: the upstream examples
                      the base answers right, the only ones that can be lost) | all (every one)
    generate_batch_size  prompts decoded at once
    on_divergence     a task whose fine-tuning diverges (a non-finite loss, gradient norm or
                      validation loss): stop (the run ends with the message) | skip (the matrix
                      goes on without that task's row; the summary names it)
    """

    upstream: str = setting("demo", choices=UPSTREAM_KINDS)
    upstream_path: str = ""
    upstream_kwargs: dict = setting(
        factory=lambda: dict(duplicates=None, source_field=None, qualify_ids=None), check=upstream_kwargs_problem,
        placeholders=dict(duplicates=str, source_field=str, qualify_ids=bool))
    num_upstream: int = setting(2000, at_least=0)
    seed: int = 0
    max_length: int = setting(1024, at_least=1)
    dtype: str = setting("float32", choices=DTYPES)
    tokens_per_batch: int = setting(16384, at_least=1)
    keep_models: bool = False
    max_rank: int = setting(10, at_least=1)
    parallel_tasks: int = setting(1, at_least=1)
    task_submeshes: int = setting(1, at_least=1)
    representations: bool = True
    task_examples: int = setting(64, at_least=1)
    gradient_dim: int = setting(0, at_least=0)
    embedder: str = ""
    upstream_tasks: tuple[str, ...] = setting((), check=demo_tasks_problem)
    metric: str = setting("nll", choices=METRICS)
    answer_kind: str = setting("auto", choices=ANSWER_KINDS)
    max_new_tokens: int = setting(0, at_least=0)
    em_columns: str = setting("base_correct", choices=EM_COLUMNS)
    generate_batch_size: int = setting(64, at_least=1)
    on_divergence: str = setting("stop", choices=ON_DIVERGENCE)


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """config.distributed: joining the processes of a multi-host run (utils/runtime.py);
    environment variables fill what the config leaves unset.

    mode                 auto: initialize when a coordinator is given or a cluster is detected (a
                         TPU VM; a Slurm step of several tasks; Open MPI with several ranks); on:
                         always (jax detects TPU, Slurm or Open MPI); off: never. FJ_DISTRIBUTED
    coordinator_address  host:port of process 0 (GPU clusters without Slurm): JAX_COORDINATOR_ADDRESS
    num_processes        JAX_NUM_PROCESSES (0: detect)
    process_id           JAX_PROCESS_ID (-1: detect)
    local_device_ids     "0,1,..." devices this process drives: JAX_LOCAL_DEVICE_IDS (empty: jax's
                         default: all local devices, one per process under Slurm)
    initialization_timeout  seconds to wait for every process
    cpu_collectives      gloo | mpi: collectives between processes on the CPU backend
    """

    mode: str = setting("auto", choices=MODES)
    coordinator_address: str = ""
    num_processes: int = setting(0, at_least=0)
    process_id: int = setting(-1, at_least=-1)
    local_device_ids: str = ""
    initialization_timeout: int = setting(300, at_least=1)
    cpu_collectives: str = setting("gloo", choices=CPU_COLLECTIVES)


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """config.runtime: process settings of every experiment command (utils/runtime.py).

    compilation_cache    auto (W/.jax_cache on GPU and TPU, off on CPU) | on | off | a directory
                         (FJ_COMPILATION_CACHE)
    cache_min_compile_seconds  only programs that took longer to compile are cached
    xla_flags            extra XLA flags, e.g. GPU scheduling flags (see launch/)
    """

    compilation_cache: str = setting(
        "auto", check=lambda v: None if v.strip() else "must be auto, on, off or a directory")
    cache_min_compile_seconds: float = setting(1.0, at_least=0)
    xla_flags: str = ""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A whole experiment: its name and every section (see the module docstring)."""

    name: str = "default"
    model: ModelSettings = setting(factory=ModelSettings)
    mesh: MeshSettings = setting(factory=MeshSettings)
    data: DataSettings = setting(factory=DataSettings)
    matrix: MatrixSettings = setting(factory=MatrixSettings)
    train: TrainSettings = setting(factory=TrainSettings)
    pretrain: PretrainSettings = setting(factory=PretrainSettings)
    predict: PredictSettings = setting(factory=PredictSettings)
    replay: ReplaySettings = setting(factory=ReplaySettings)
    distributed: DistributedSettings = setting(factory=DistributedSettings)
    runtime: RuntimeSettings = setting(factory=RuntimeSettings)
