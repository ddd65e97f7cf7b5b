"""A `.gguf` file wherever a model directory is accepted: converted once into a Hugging Face
directory keyed by the file's bytes, then read like any other model directory.

    resolve_model_source(path, root=None) -> str   a directory unchanged; a .gguf file's
                                                   converted directory (converting when needed)

The converted directory is `<root>/<stem>-<fp>/` (root: the workspace's `gguf/` for `run`,
`finetune` and the like, else the file's own directory, else ~/.cache/forgetting_jax/gguf when
that is not writable). It holds config.json, model.safetensors (float32: the dequantized values
exactly), the tokenizer with its chat template, and fingerprint.json (the file's sha256),
written last. The conversion is atomic (a temporary directory renamed into place), so a crash
leaves nothing half-written to be reused; a changed file has a new fingerprint and converts anew.
"""

import hashlib
import json
import logging
import os
import time

from forgetting_jax.models.gguf_weights import GgufError, hf_config, hf_tensors, open_reader
from forgetting_jax.models.safetensors_io import save_file
from forgetting_jax.utils.io import atomic_dir, write_json

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_MEMO: dict[tuple, str] = {}


def is_gguf(path: str | None) -> bool:
    """True for a path naming a .gguf file (existing or not: a missing one errors when resolved)."""
    return bool(path) and str(path).lower().endswith(".gguf") and not os.path.isdir(path)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _writable(directory: str) -> bool:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def default_root(path: str) -> str:
    """Where a .gguf file converts when no workspace is given: beside it, else the user cache."""
    beside = os.path.dirname(os.path.abspath(path))
    if _writable(beside):
        return beside
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "forgetting_jax", "gguf")


def converted_dir(path: str, root: str | None = None, sha256: str | None = None) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    sha256 = sha256 or file_sha256(path)
    return os.path.join(os.path.abspath(root or default_root(path)), f"{stem}-{sha256[:16]}")


def _finished(directory: str, sha256: str) -> bool:
    record = os.path.join(directory, "fingerprint.json")
    if not os.path.isfile(record):
        return False
    try:
        with open(record, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return data.get("sha256") == sha256 and data.get("version") == FORMAT_VERSION


def convert_gguf(path: str, out_dir: str, sha256: str) -> None:
    """Writes the Hugging Face directory of GGUF file `path` into `out_dir` (atomically)."""
    from forgetting_jax.models.gguf_tokenizer import build_tokenizer

    start = time.time()
    reader = open_reader(path)
    config = hf_config(reader, path)
    try:
        tokenizer = build_tokenizer(reader, path)
    except GgufError as err:  # the weights still convert; the directory then needs --tokenizer=DIR
        log.warning("%s; the converted directory has no tokenizer", err)
        tokenizer = None
    log.info("converting %s (%s, %d layers) into %s", path, config["model_type"], config["num_hidden_layers"],
             out_dir)
    tensors = dict(hf_tensors(reader, config, path))
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        write_json(os.path.join(tmp, "config.json"), config)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None}
        write_json(os.path.join(tmp, "generation_config.json"), generation)
        write_json(os.path.join(tmp, "fingerprint.json"),
                   {"source": os.path.basename(path), "sha256": sha256, "bytes": os.path.getsize(path),
                    "version": FORMAT_VERSION, "tokenizer": tokenizer is not None})
    log.info("converted %s in %.1f s", os.path.basename(path), time.time() - start)


def resolve_model_source(path: str, root: str | None = None, convert: bool = True) -> str:
    """`path` itself when it is a directory; for a .gguf file its converted Hugging Face directory
    under `root` (see the module docstring), converted when not there yet. convert=False returns
    the directory without converting (the processes that wait for process 0 on a multi-host run)."""
    if not is_gguf(path):
        return path
    if not os.path.isfile(path):
        raise GgufError(f"{path}: no such .gguf file")
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, root)
    if key in _MEMO and os.path.isdir(_MEMO[key]):
        return _MEMO[key]
    sha256 = file_sha256(path)
    directory = converted_dir(path, root, sha256)
    if convert and not _finished(directory, sha256):
        convert_gguf(path, directory, sha256)
    _MEMO[key] = directory
    return directory


def workspace_model_source(path: str, workdir: str) -> str:
    """resolve_model_source into the workspace's gguf/ (`path` unchanged unless a .gguf file):
    process 0 converts, the others wait for it."""
    if not is_gguf(path):
        return path
    from forgetting_jax.utils.runtime import barrier, is_main

    directory = resolve_model_source(path, os.path.join(workdir, "gguf"), convert=is_main())
    barrier("gguf_conversion")
    return directory
