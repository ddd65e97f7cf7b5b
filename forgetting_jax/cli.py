"""Entry point of `forgetting-jax <command> [--flags]`.

Each command lives in `forgetting_jax.commands.<name>`: a module that defines its absl flags at
import time and a `main(argv)` function. Only the chosen command's module is imported (a command
imported earlier in the same process is unloaded with its flags first), so the flags of one
command never leak into another's `--help` nor clash with another's flags of the same name.

`forgetting-jax <command> --help` (or -h, --helpshort) prints the command's own flags, those of
the experiment commands' shared --config/--workdir included; `--helpfull` is absl's list of every
flag in the process.
"""

import importlib
import os
import re
import signal
import sys
import textwrap

COMMANDS = {
    "score": "Per-example mean NLL of a data file under a model.",
    "generate": "Greedy completions of a data file under a model (KV-cache decoder).",
    "analyze": "Low-rank fits, statistics and figures of a forgetting matrix.",
    "predict": "Matrix-completion protocol: predict unseen tasks' rows from k observed entries.",
    "forecast": "Which upstream examples a fine-tuned checkpoint forgot, from k of them scored.",
    "pretrain": "Pre-train a model on language-model text (the demo's upstream model).",
    "finetune": "Fine-tune the base model on one task.",
    "run": "The whole pipeline: base scores, per-task fine-tuning, rescoring, the matrix, a report.",
    "replay": "The replay experiment: fine-tune with predicted-forgotten examples replayed.",
    "inspect": "What a data file holds as the project reads it: records, tasks, one example, its tokens.",
}

EXAMPLES = {
    "score": "forgetting-jax score --model=models/olmo-1b --data=upstream.jsonl --format=lm --output=base.npz",
    "generate": ("forgetting-jax generate --model=models/olmo-7b-instruct --data=prompts.jsonl --format=chat "
                 "--max_new_tokens=32 --output=completions.jsonl"),
    "analyze": "forgetting-jax analyze --matrix=W/matrix/forgetting.npz --output=W/analysis",
    "predict": "forgetting-jax predict --matrix=W/matrix/forgetting.npz --test_fraction=0.3 --k=30 --output=R.json",
    "forecast": "forgetting-jax forecast --matrix=W/matrix/forgetting.npz --model=FINETUNED --k=30 --output=F.jsonl",
    "pretrain": "forgetting-jax pretrain --config=configs/demo.py --workdir=W",
    "finetune": "forgetting-jax finetune --config=configs/demo.py --workdir=W --task=add",
    "run": "forgetting-jax run --config=configs/demo.py --workdir=W --config.data.tasks=add,subtract,parity",
    "replay": "forgetting-jax replay --config=configs/demo.py --workdir=W --strategies=none,random",
    "inspect": "forgetting-jax inspect --source=mmlu --data=mmlu_test.jsonl --dev_data=mmlu_dev.jsonl --model=DIR",
}

HELP_FLAGS = ("-h", "--help", "--helpshort", "-?")
_COMMON = "forgetting_jax.commands.common"


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: forgetting-jax <command> [--flags]   (forgetting-jax <command> --help)", ""]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _module_name(name: str) -> str:
    return f"forgetting_jax.commands.{name}"


def _unload_other_commands(name: str) -> None:
    """Unloads the modules (and their flags) of commands other than `name` imported earlier in
    this process, so that `name`'s module can define flags of the same names."""
    from absl import flags

    package = sys.modules.get("forgetting_jax.commands")
    for other in COMMANDS:
        module_name = _module_name(other)
        if other == name or module_name not in sys.modules:
            continue
        for flag in flags.FLAGS.get_flags_for_module(module_name):
            for flag_name in {flag.name, flag.short_name} - {None}:
                if flag_name in flags.FLAGS:
                    delattr(flags.FLAGS, flag_name)
        del sys.modules[module_name]
        if package is not None and hasattr(package, other):
            delattr(package, other)


def _import_command(name: str):
    _unload_other_commands(name)
    try:
        return importlib.import_module(_module_name(name))
    except ModuleNotFoundError as err:
        if err.name != _module_name(name):
            raise
        print(f"forgetting-jax: command {name!r} is not available in this build", file=sys.stderr)
        sys.exit(2)


def _metavar(flag, named: dict[str, str]) -> str:
    kind = flag.flag_type()
    if kind == "bool":
        return ""
    if flag.name in named:
        return "=" + named[flag.name]
    if "enum" in kind:
        return "=" + "|".join(str(v) for v in getattr(flag.parser, "enum_values", []))
    if "list" in kind:
        return "=A,B,..."
    if kind == "int":
        return "=N"
    if kind == "float":
        return "=X"
    if kind == "config object":
        return "=FILE.py"
    return "=VALUE"


def _default_text(flag, required: bool) -> str:
    notes = []
    if required:
        notes.append("required")
    elif flag.flag_type() == "bool":
        notes.append(f"default: {'true' if flag.default else 'false'}")
    elif flag.default is None:
        notes.append("default: none")
    elif isinstance(flag.default, (list, tuple)):
        notes.append("default: " + (",".join(str(v) for v in flag.default) or "empty"))
    else:
        notes.append(f"default: {flag.default}")
    syntax = getattr(flag.parser, "syntactic_help", "")
    if syntax and "list" not in flag.flag_type() and syntax not in ("an integer", "a number", "a string"):
        notes.append(syntax)
    return "(" + "; ".join(notes) + ")"


def _format_flags(flag_list, required: set[str], named: dict[str, str]) -> list[str]:
    lines = []
    for flag in flag_list:
        prefix = "--[no]" if flag.flag_type() == "bool" else "--"
        lines.append(f"  {prefix}{flag.name}{_metavar(flag, named)}  {_default_text(flag, flag.name in required)}")
        text = re.sub(r"^<[^>]*>: ", "", flag.help or "")  # absl prefixes an enum's help with its values
        lines += textwrap.wrap(text, width=96, initial_indent="      ", subsequent_indent="      ")
    return lines


def _parse_doc(doc: str, name: str) -> tuple[str, list[str], str]:
    """(title, usage lines, description) of a command module's docstring: a title paragraph
    "`forgetting-jax NAME`: what it does", indented usage lines, then the description."""
    paragraphs = [p for p in re.split(r"\n\s*\n", doc.strip("\n")) if p.strip()]
    title, usage, rest = "", [], []
    for i, paragraph in enumerate(paragraphs):
        lines = paragraph.splitlines()
        if i == 0 and not lines[0].startswith(" "):
            title = re.sub(r"^`forgetting-jax \w+`:\s*", "", " ".join(line.strip() for line in lines))
            title = textwrap.fill(title[:1].upper() + title[1:], width=100)
        elif all(line.startswith("  ") for line in lines) and lines[0].strip().startswith("forgetting-jax "):
            block = textwrap.dedent(paragraph).splitlines()
            usage += block
        else:
            rest.append(textwrap.fill(" ".join(line.strip() for line in lines), width=100))
    return title, usage or [f"forgetting-jax {name} [--flags]"], "\n\n".join(rest)


def command_help(name: str) -> str:
    """The text of `forgetting-jax <name> --help`: usage, description, the command's flags, an example."""
    from absl import flags

    module = _import_command(name)
    title, usage, description = _parse_doc(module.__doc__ or "", name)
    lines = ["usage: " + usage[0]] + ["       " + u for u in usage[1:]]
    lines += ["", title or COMMANDS[name]]
    if description:
        lines += ["", description]
    required = set(getattr(module, "REQUIRED", ()))
    # Placeholders the usage lines give (--model=DIR, --output=OUT.npz), not example values.
    named = {m[1]: m[2] for m in re.finditer(r"--(\w+)=([A-Z][\w.]*)", " ".join(usage))}
    own = flags.FLAGS.get_flags_for_module(module.__name__)
    lines += ["", f"flags of {name}:"] + (_format_flags(own, required, named) if own else ["  (none)"])
    if hasattr(module, "define_experiment_flags"):  # the experiment commands
        shared = flags.FLAGS.get_flags_for_module(_COMMON)
        lines += ["", "experiment flags:"] + _format_flags(shared, {"config", "workdir"}, named)
        lines += ["  --config.SECTION.FIELD=VALUE",
                  "      Override any field of the config, e.g. --config.train.lr=1e-4; list fields take",
                  "      comma lists: --config.data.tasks=add,subtract. Sections and fields:",
                  "      forgetting_jax/experiment/sections.py."]
    lines += ["", "example:", "  " + EXAMPLES.get(name, f"forgetting-jax {name} --help"), "",
              "forgetting-jax --help lists the commands; --helpfull lists every flag, absl's included."]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Dispatches to the command named by argv[1] (None: sys.argv, the program's own command line)."""
    whole_process = argv is None
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        print(f"forgetting-jax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    from forgetting_jax.commands.common import quiet_libraries

    quiet_libraries()
    if any(arg in HELP_FLAGS for arg in argv[2:]):
        try:
            print(command_help(name), flush=True)
        except BrokenPipeError:  # `forgetting-jax score --help | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    module = _import_command(name)
    from absl import app, flags

    command_argv = [f"forgetting-jax {name}"] + argv[2:]
    saved_argv, sys.argv = sys.argv, command_argv  # ml_collections reads --config.* overrides here
    flags.FLAGS.unparse_flags()  # a second run in one process starts from the defaults again
    started = []

    def main(main_argv):
        started.append(True)
        return module.main(main_argv)

    try:
        previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (an embedding program's worker): its own handling stays
        previous_handler = None
    try:
        app.run(main, argv=command_argv, flags_parser=lambda args: _parse_flags(name, args))
    except (AttributeError, KeyError) as err:
        if started:  # raised by the command itself, not by the parsing of its flags
            raise
        _unknown_override(name, argv[2:], err)
    except KeyboardInterrupt:
        _stopped(name, "interrupted (Ctrl-C)", 130, whole_process)
    except Terminated:
        _stopped(name, "terminated (SIGTERM)", 143, whole_process)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        sys.argv = saved_argv
        for flag_name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, flag_name)  # defined by this run's overrides; the next run redefines them


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's preemption, `kill`): unwinds like Ctrl-C, so that open
    files, checkpoints and the workspace lock are closed on the way out."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _stopped(name: str, how: str, code: int, whole_process: bool) -> None:
    """One line saying what an interrupted command kept and how to go on; exits with `code`.
    whole_process: the program is this command, so it ends at once, after the line and the logs
    are flushed (the files it wrote are closed already, on the way out of the command; background
    threads of the checkpointing library would otherwise print tracebacks while the interpreter
    shuts down)."""
    from absl import flags

    workdir = flags.FLAGS["workdir"].value if "workdir" in flags.FLAGS else None
    if workdir:
        kept = (f"everything finished in {workdir} is kept (base model, fine-tuning runs, rows, base scores) and "
                "a run in progress resumes from its latest checkpoint: rerun the same command to go on")
    else:
        kept = "its output was not written (outputs are written whole, at the end): rerun the command"
    print(f"forgetting-jax {name}: {how}; {kept}", file=sys.stderr, flush=True)
    if whole_process:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


def _parse_flags(name: str, argv: list[str]) -> list[str]:
    """absl's flag parsing, with a `--config.a.b=v` whose value does not parse as the field's type
    (--config.train.steps=abc) failing in one line that names the field and its type."""
    from absl import app, flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        found = re.match(r"flag --config\.([\w.]+)=(.*?): ", str(err), re.DOTALL)
        if found is None:
            return app.parse_flags_with_usage(argv)  # absl's message and exit status
        from forgetting_jax.experiment import field_kind

        field, value = found.groups()
        kind = field_kind(field) or "of the field's type"
        print(f"forgetting-jax {name}: error: config field {field}={value!r} is not {kind}", file=sys.stderr,
              flush=True)
        sys.exit(2)


def _unknown_override(name: str, args: list[str], err: BaseException) -> None:
    """A `--config.a.b=v` naming no section or field of the config: one clear line (with
    ml_collections' suggestion, when it has one) instead of a traceback."""
    message = err
    while isinstance(message, BaseException) and message.args:  # KeyError(msg), AttributeError(KeyError(msg))
        message = message.args[0]
    first, _, rest = str(message).partition("\n")
    field = first.strip().strip("\"'")
    suggested = re.search(r'Did you mean "([^"]+)"', rest)
    overrides = [a.split("=", 1)[0] for a in args if a.startswith("--config.")]
    culprit = next((a for a in overrides if field in a.split(".")[1:]), None)
    if culprit is None:
        raise err
    parts = culprit[len("--config."):].split(".")
    index = parts.index(field)
    where = "the config" if index == 0 else "config." + ".".join(parts[:index])
    what = "section" if index < len(parts) - 1 else "field"
    hint = f"; did you mean {suggested.group(1)!r}?" if suggested else ""
    print(f"forgetting-jax {name}: error: {culprit}: {where} has no {what} {field!r}{hint} (the sections and their "
          "fields: forgetting_jax/experiment/sections.py)", file=sys.stderr, flush=True)
    sys.exit(2)
