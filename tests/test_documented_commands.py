"""Every command line of README.md, of the configs' docstrings and of the --help texts runs, on tiny
inputs (tests/documented.py collects and concretizes them), so the documentation cannot drift from
behaviour. Lines that need hardware or a cluster are dry-checked (flags and config parsed, or the
launch script's usage printed) and listed in DRY_ONLY with the reason."""

import json
import os
import subprocess
import sys

import pytest
from absl import logging as absl_logging

import documented as doc
import micro_demo
from tiny_hf import make_hf_base

ROOT = doc.ROOT
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "data")

# Appended to every demo-config line (pretrain, finetune, run, replay): the micro demo
# (tests/micro_demo.py), identical everywhere so that the lines share one micro workspace (base, rows
# and replay runs reused by fingerprint) and the other pipeline tests' compiled steps.
DEMO_TASKS = "add,subtract,parity"  # = `forgetting-jax run --help`'s example, so it reuses too
DEMO_SHRINK = micro_demo.flag_values(tasks=DEMO_TASKS.split(","), **{"replay.test_tasks": ("divide",)})
# ... and to the exact-match demo's: the micro base answers none of its prompts right, so the
# matrix keeps every column; it never ends an answer, so it gets a small budget (the default one,
# up to 512 new tokens, is tested in tests/matrix/test_matrix_answers.py).
DEMO_EXACT_SHRINK = dict(DEMO_SHRINK, **{"matrix.em_columns": "all", "matrix.max_new_tokens": "24"})
# Appended to every line of a config that imports a Hugging Face model (model.hf_dir, a tiny one).
HF_SHRINK = {
    "mesh.num_devices": "1", "mesh.fsdp": "1", "model.dtype": "float32", "train.steps": "2",
    "train.eval_every": "2", "train.log_every": "2", "train.row_length": "128", "train.micro_rows": "2",
    "data.max_length": "64", "matrix.max_length": "64", "matrix.num_upstream": "16", "matrix.dtype": "float32",
    "train.export_dtype": "float32",
}
# The configs of the paper's 66 FLAN tasks (data.tasks shrunk to the FLAN fixture's).
FLAN_CONFIGS = ("olmo_1b_dolma_flan", "olmo_7b_dolma_flan", "olmo2_7b_olmo2mix_flan", "olmo2_13b_olmo2mix_flan",
                "pythia_6_9b_pile", "pythia_12b_pile", "mpt_7b_redpajama_flan")
HF_CONFIGS = FLAN_CONFIGS + ("olmo_7b_instruct_tulu", "pythia_1b_pile", "single_gpu_debug", "smollm2_instruct",
                             "smollm2_instruct_exact_match")
TASK_OF_CONFIG = {"olmo_7b_instruct_tulu": "open_qa"}  # the rest: FLAN fixtures' task; demo: add

# Lines that cannot run on this machine: prefix of the documented line -> why only a dry check.
DRY_ONLY = {
    "launch/local_cpu.sh": "a subprocess running `forgetting-jax run` (executed in-process by the README's "
                           "own run lines); P > 1 is the multi-process rehearsal of tests/train/test_train_distributed.py",
    "launch/single_gpu_debug.sh": "needs a GPU (CUDA_VISIBLE_DEVICES, cuDNN flags)",
    "sbatch --nodes=N launch/slurm_gpu.sbatch": "needs a Slurm cluster",
    "launch/tpu_vm.sh": "needs gcloud and a Cloud TPU project",
    "forgetting-jax run --config=configs/olmo_7b_dolma_flan.py --workdir=/shared/fj/olmo7b --config.mesh.fsdp=16":
        "two GPU hosts joined by jax.distributed (fsdp=16 needs 16 devices); flags and config parsed",
}

# Launch scripts: run without arguments, each prints its usage and exits 2.
SCRIPTS = {"launch/local_cpu.sh": "launch/local_cpu.sh", "launch/single_gpu_debug.sh": "launch/single_gpu_debug.sh",
           "sbatch": "launch/slurm_gpu.sbatch", "launch/tpu_vm.sh": "launch/tpu_vm.sh"}


def setup_module():
    # absl's handler holds the stderr of when absl was imported (pytest's capture); the commands'
    # logging setup closes it, which must not close pytest's capture file.
    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


# ---------------------------------------------------------------------------------------------------
# The extraction itself


def test_extraction_joins_continuations_and_drops_prefixes():
    text = ("# a\n```bash\npip install -e . && forgetting-jax run --config=C --workdir=W\n"
            "JAX_COORDINATOR_ADDRESS=h:1 JAX_PROCESS_ID=$RANK \\\n  python -m forgetting_jax score --model=DIR \\\n"
            "  --data=FILE\n# comment forgetting-jax x --y\n```\n"
            "| `forgetting-jax score --format=lm\\|chat` | x |\nprose `forgetting-jax replay` and `launch/x.sh W`\n")
    found = doc.commands_in_markdown(text, "T.md")
    assert [d.line for d in found] == ["forgetting-jax run --config=C --workdir=W",
                                       "forgetting-jax score --model=DIR --data=FILE",
                                       "forgetting-jax score --format=lm|chat", "launch/x.sh W"]
    assert [d.source for d in found] == ["T.md:3", "T.md:4", "T.md:9", "T.md:10"]
    docstring = "Title.\n\n  forgetting-jax finetune --config=c.py --workdir=W \\\n      --task=NAME\n(`forgetting-jax replay --workdir=W`)\n"
    assert [d.line for d in doc.commands_in_docstring(docstring, "c.py")] == [
        "forgetting-jax finetune --config=c.py --workdir=W --task=NAME", "forgetting-jax replay --workdir=W"]
    helptext = ("usage: forgetting-jax score --model=DIR --output=OUT.npz\n                    [--max_length=N]\n\n"
                "flags:\n  --[no]x  (default)\nexample:\n  forgetting-jax score --model=DIR\n")
    assert [d.line for d in doc.commands_in_help(helptext, "h")] == [
        "forgetting-jax score --model=DIR --output=OUT.npz [--max_length=N]", "forgetting-jax score --model=DIR"]


def test_substitution_of_synopses_and_unknown_placeholders():
    resources = dict(workdir="/w", tmp="/t", hf_dir="/hf", fixtures="/fx", data="/d", root="/r", task="add",
                     matrix_task="add")
    line = doc.Documented("x", "forgetting-jax score --model=DIR --data=FILE --format=lm|chat --output=OUT.npz "
                               "[--max_length=N] [--dtype=float32|bfloat16]")
    assert doc.concretize(line, resources) == ["forgetting-jax", "score", "--model=/hf", "--data=/fx/lm.jsonl",
                                               "--format=lm", "--output=/t/out.npz", "--max_length=64",
                                               "--dtype=float32"]
    line = doc.Documented("x", "forgetting-jax run --config=C --workdir=W [--tasks=a,b] --config.data.train_path="
                               "/data/flan/{task}.jsonl")
    assert doc.concretize(line, resources) == ["forgetting-jax", "run", "--config=configs/demo.py", "--workdir=/w",
                                               "--config.data.train_path=/d/flan/{task}.jsonl"]
    with pytest.raises(doc.UnknownPlaceholder, match=r"\[--frob=X\], --model=NEWTHING, --data=/nowhere/x.jsonl"):
        doc.concretize(doc.Documented("x", "forgetting-jax score --model=NEWTHING [--frob=X] "
                                           "--data=/nowhere/x.jsonl"), resources)


# ---------------------------------------------------------------------------------------------------
# The documented lines


@pytest.fixture(scope="module")
def help_texts():
    return HELP_TEXTS


@pytest.fixture(scope="module")
def documented():
    return DOCUMENTED


def test_every_command_prints_help(help_texts):
    failed = {name: text[-300:] for name, (code, text) in help_texts.items() if code != 0 or not text.strip()}
    assert not failed, failed


def test_every_source_documents_commands(documented):
    sources = {d.source.split(":")[0] for d in documented}
    assert "README.md" in sources and any(s.startswith("configs/") for s in sources)
    commands = {d.command for d in documented if d.kind == "cli"}
    from forgetting_jax import cli

    assert set(cli.COMMANDS) <= commands, f"commands no documented line shows: {set(cli.COMMANDS) - commands}"


def test_dry_only_entries_are_documented(documented):
    stale = [p for p in DRY_ONLY if not any(d.line.startswith(p) for d in documented)]
    assert not stale, f"DRY_ONLY names lines the docs no longer have: {stale}"


def _write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _read_jsonl(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    """The tiny inputs the placeholders stand for."""
    base = tmp_path_factory.mktemp("documented")
    data = base / "data"
    flan = _read_jsonl("flan.jsonl")
    by_task = [dict(r, inputs=f"{r['inputs']} ({i})") for i in range(12) for r in flan]
    _write_jsonl(str(data / "flan_by_task.jsonl"), by_task)
    for task in {r["task"] for r in flan}:
        _write_jsonl(str(data / "flan" / f"{task}.jsonl"), [r for r in by_task if r["task"] == task])
    dolly = _read_jsonl("dolly.jsonl")
    _write_jsonl(str(data / "dolly.jsonl"), [dict(r, instruction=f"{r['instruction']} ({i})")
                                             for i in range(16) for r in dolly])
    return dict(workdir=str(base / "W"), hf_dir=make_hf_base(str(base / "hf")), fixtures=FIXTURES, data=str(data),
                root=ROOT, base=str(base), flan_task=sorted({r["task"] for r in flan})[0],
                flan_tasks=",".join(sorted({r["task"] for r in flan})))


def _config_name(argv):
    for arg in argv:
        if arg.startswith("--config="):
            return os.path.splitext(os.path.basename(arg.split("=", 1)[1]))[0]
    return None


def _with_shrink(argv, flan_tasks):
    name = _config_name(argv)
    shrink = {"demo": DEMO_SHRINK, "demo_exact_match": DEMO_EXACT_SHRINK}.get(name, HF_SHRINK if name in HF_CONFIGS
                                                                              else {})
    if name in FLAN_CONFIGS:  # the paper's 66 FLAN tasks -> the fixture's
        shrink = dict(shrink, **{"data.tasks": flan_tasks})
    if name == "single_gpu_debug":
        shrink = dict(shrink, **{"data.tasks": "add", "matrix.num_upstream": "16"})
    if name in ("smollm2_instruct", "smollm2_instruct_exact_match"):  # on the tiny model: 2 tasks
        shrink = dict(shrink, **{"data.tasks": "add,subtract", "data.max_validation": "8"})
    if name == "smollm2_instruct_exact_match":  # the tiny model answers nothing right: keep every column
        shrink = dict(shrink, **{"matrix.em_columns": "all", "matrix.max_new_tokens": "8"})
    given = {a.split("=", 1)[0] for a in argv}
    return list(argv) + [f"--config.{k}={v}" for k, v in shrink.items() if f"--config.{k}" not in given]


def _resources_for(documented, resources, tmp_path):
    name = _config_name(documented.line.split())
    name = "demo" if name in ("C", "CONFIG") else name  # VALUES maps C to configs/demo.py
    suite = (None, "demo", "demo_exact_match", "single_gpu_debug", "smollm2_instruct", "smollm2_instruct_exact_match")
    task = "add" if name in suite else TASK_OF_CONFIG.get(name, resources["flan_task"])
    return dict(resources, tmp=str(tmp_path), task=task, matrix_task=DEMO_TASKS.split(",")[-1])


def _order(line):
    """Lines that build the shared workspace first (the matrix lines need it)."""
    words = line.split()
    return {"pretrain": 0, "finetune": 1, "run": 2, "replay": 3}.get(words[1] if len(words) > 1 else "", 4)


EXPERIMENT_COMMANDS = ("pretrain", "finetune", "run", "replay")


def _is_slow(documented) -> bool:
    """Lines that train (the experiment commands) or read the shared micro workspace they build
    (its matrix): marked slow, so that `-m "not slow"` keeps the rest and never runs a line whose
    workspace it skipped."""
    if documented.kind == "script" or any(documented.line.startswith(p) for p in DRY_ONLY):
        return False
    if documented.command in EXPERIMENT_COMMANDS:
        return True
    marker = "\0workspace\0"
    placeholders = dict(workdir=marker, tmp="t", hf_dir="h", fixtures="f", data="d", root="r", task="add",
                        matrix_task="add")
    try:
        return any(marker in arg for arg in doc.concretize(documented, placeholders))
    except doc.UnknownPlaceholder:
        return False  # fails in the test itself, naming the placeholder


HELP_TEXTS = doc.help_texts()  # collected at import time, for the test ids
DOCUMENTED = sorted(doc.all_documented(HELP_TEXTS), key=lambda d: _order(d.line))


@pytest.mark.parametrize("line", [pytest.param(d, marks=[pytest.mark.slow] if _is_slow(d) else [],
                                               id=f"{d.source}|{d.line[:70]}") for d in DOCUMENTED])
def test_documented_line_runs(line, resources, tmp_path):
    dry = next((p for p in DRY_ONLY if line.line.startswith(p)), None)
    if line.kind == "script":
        assert dry, f"{line}: a launch-script line not in DRY_ONLY"
        script = next(path for prefix, path in SCRIPTS.items() if line.line.startswith(prefix))
        result = subprocess.run(["bash", os.path.join(ROOT, script)], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env=dict(os.environ, PATH=os.environ.get("PATH", "")))
        assert result.returncode == 2 and (result.stdout + result.stderr).strip(), (result.returncode, result.stderr)
        return
    line_resources = _resources_for(line, resources, tmp_path)
    argv = _with_shrink(doc.concretize(line, line_resources), resources["flan_tasks"])
    key = tuple(a.replace(str(tmp_path), "{tmp}") for a in argv)
    if key in _SUCCEEDED:
        return  # the same command as an earlier documented line once substituted (README table vs --help)
    saved = os.getcwd()
    os.chdir(ROOT)  # configs/demo.py and the like are relative to the repository
    try:
        if dry:
            doc.parse_only(argv)
            return
        code, out = doc.run_cli(argv)
    finally:
        os.chdir(saved)
    assert code == 0, f"{line}\n  ran as: {' '.join(argv)}\n  exit {code}\n{out[-2000:]}"
    _SUCCEEDED.add(key)


_SUCCEEDED = set()
