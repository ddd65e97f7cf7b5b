"""The config schema of training runs (ml_collections), with the paper's recipe as defaults.

configs/*.py start from `default_config()` and change what differs. Sections:

model     base            hf: the base is model.hf_dir, imported; pretrain: the base is pre-trained on
                          pretrain.corpus, from model.hf_dir's weights when set, else from random
                          weights in the architecture below
          hf_dir          a Hugging Face model directory (config.json, safetensors, tokenizer)
          tokenizer       tokenizer directory (None: hf_dir's, else the demo tokenizer)
          hf_fingerprint  how an imported base is identified: content (hash every byte), metadata
                          (config.json + names, sizes and mtimes of weight files) or auto (content
                          below 2 GiB)
          family, vocab_size (0: the tokenizer's), hidden_size, num_layers, num_heads, num_kv_heads,
          head_dim, mlp_dim, max_position_embeddings, rope_theta, tie_embeddings, norm_eps
                          the architecture of a model pre-trained from scratch (ignored with hf_dir)
          param_dtype     master weights and optimizer state (float32)
          dtype           compute dtype of matrix products (bfloat16)
          remat_policy    none | full | dots | dots_no_batch (activation checkpointing per layer)
          scan_layers     True: one compiled layer body scanned over depth; False: unrolled
          logits_chunks   token chunks of the vocabulary projection
          attention_impl  auto | xla | cudnn (models/attention.py; auto: cuDNN on GPUs where it applies)
mesh      data, fsdp, tensor   sizes; -1 fills the devices the others leave
          num_devices     use the first N devices (-1: all)
data      source          demo | files   (see train/inputs.py)
          tasks           the task names of the experiment (the pipeline fine-tunes each)
          reader, train_path, validation_path, validation_fraction, max_validation, max_train,
          reader_kwargs, skip_bad, seed, max_length (tokens kept per example: the last ones)
train     fine-tuning (`forgetting-jax finetune`); see `train_defaults`
matrix    the upstream examples and how they are scored (see matrix/settings.py)
pretrain  pre-training (`forgetting-jax pretrain`): train_defaults plus corpus, max_examples,
          validation_fraction, max_validation
replay    the replay experiment (`forgetting-jax replay`; see replay/settings.py)
distributed  joining the processes of a multi-host run (see train/distributed.py): mode
          (auto | on | off), coordinator_address, num_processes, process_id, local_device_ids,
          initialization_timeout, cpu_collectives
runtime   compilation_cache (auto | on | off | DIR), cache_min_compile_seconds, xla_flags
"""

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from forgetting_jax.matrix.settings import matrix_defaults
from forgetting_jax.train.distributed import distributed_defaults, runtime_defaults
from forgetting_jax.replay.settings import replay_defaults
from forgetting_jax.train.lora import TARGETS

# The 24 demo tasks the demo experiment fine-tunes on (of the suite's 33; `data.demo.tasks`).
DEMO_TASKS = (
    "add", "subtract", "multiply", "remainder", "parity", "digit_sum", "reverse_word", "uppercase",
    "sort_letters", "count_letter", "acronym", "remove_vowels", "word_count", "shift_letters", "to_binary",
    "roman", "number_words", "date_format", "snake_to_camel", "kv_to_json", "sort_numbers", "capital",
    "antonym", "docstring_function",
)


def train_defaults() -> ConfigDict:
    """Fields shared by `train` and `pretrain` (defaults: the paper's fine-tuning recipe).

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
    eval_every      validation every N steps (and at the last step); 0: never. The step with the
                    lowest validation loss is the run's result (as in the paper)
    eval_rows       rows per validation batch
    save_every      also checkpoint every N steps between validations (0: only at validations)
    keep_checkpoints  keep the orbax training checkpoints of a finished run (else only its model)
    export_dtype    dtype of the exported model's weights (empty: param_dtype)
    log_every       log line every N steps
    peak_flops      peak FLOP/s per device for the MFU estimate (0: from the device kind)
    lora            rank, alpha, dropout, lr, targets (projections)
    """
    return ConfigDict(dict(
        method="full", lr=2e-6, steps=1000, warmup_steps=10, batch_size=8, batching="examples",
        row_length=1024, max_segments=64, micro_rows=1, grad_clip=1.0, weight_decay=0.0, b1=0.9, b2=0.999,
        eps=1e-8, seed=0, eval_every=100, eval_rows=8, save_every=0, keep_checkpoints=False, export_dtype="",
        log_every=10, peak_flops=0.0,
        lora=ConfigDict(dict(rank=64, alpha=16.0, dropout=0.1, lr=1e-4, targets=TARGETS)),
    ))


def default_config() -> ConfigDict:
    config = ConfigDict()
    config.name = "default"
    config.model = ConfigDict(dict(
        hf_dir=placeholder(str), base="hf", tokenizer=placeholder(str), hf_fingerprint="auto",
        family="llama", vocab_size=0, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=32,
        mlp_dim=512, max_position_embeddings=4096, rope_theta=10000.0, tie_embeddings=False, norm_eps=1e-6,
        param_dtype="float32", dtype="bfloat16", remat_policy="none", scan_layers=True, logits_chunks=4,
        attention_impl="auto",
    ))
    config.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1, num_devices=-1))
    config.data = ConfigDict(dict(
        source="demo", tasks=(), reader="flan", train_path="", validation_path="", validation_fraction=0.1,
        max_validation=200, max_train=0, reader_kwargs=ConfigDict(), skip_bad=False, seed=0, max_length=1024,
    ))
    config.matrix = matrix_defaults()
    config.train = train_defaults()
    config.pretrain = train_defaults()
    config.pretrain.update(dict(
        lr=1e-3, steps=1000, warmup_steps=100, batching="rows", batch_size=8, micro_rows=8, weight_decay=0.01,
        eval_every=0, corpus=placeholder(str), max_examples=0, validation_fraction=0.0, max_validation=200,
        keep_checkpoints=False))
    config.replay = replay_defaults()
    config.distributed = distributed_defaults()
    config.runtime = runtime_defaults()
    return config


def _split_items(items) -> list:
    out = []
    for item in items:
        if isinstance(item, str):
            out += [part.strip() for part in item.split(",") if part.strip()]
        else:
            out.append(item)
    return out


def split_comma_lists(config: ConfigDict, fields=None) -> ConfigDict:
    """Reads comma lists in the list and tuple fields of `config`, in place; returns `config`.

    ml_collections reads `--config.data.tasks=a,b,c` as the one-item tuple ("a,b,c",) (it
    evaluates the value as a Python literal when it can, else wraps it); this splits every string
    item on commas, strips blanks and drops empty items, so that override is ("a", "b", "c") and
    `--config.data.tasks=` is (). The field keeps its type (tuple or list). `fields`: the dotted
    names to split (e.g. "data.tasks"; those given on the command line); None: every list or
    tuple field, nested sections included. Names of other fields are ignored.
    """
    if fields is None:
        fields = _list_fields(config)
    for name in fields:
        *sections, key = name.split(".")
        parent = config
        for section in sections:
            parent = parent.get(section) if isinstance(parent, ConfigDict) else None
        if not isinstance(parent, ConfigDict) or key not in parent:
            continue
        value = parent[key]
        if isinstance(value, (tuple, list)):
            parent[key] = type(value)(_split_items(value))
    return config


def _list_fields(config: ConfigDict, prefix: str = "") -> list[str]:
    names = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ConfigDict):
            names += _list_fields(value, f"{prefix}{key}.")
        elif isinstance(value, (tuple, list)):
            names.append(prefix + key)
    return names
