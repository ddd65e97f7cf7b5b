"""The package's layers: every import of forgetting_jax, at module level or inside a function,
runs downward through LAYERS below, and no two modules of one stage import each other in a cycle."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "forgetting_jax"

# Lower layers first; packages of one layer do not import each other (no sideways imports).
LAYERS = (
    ("utils", "resources"),
    ("experiment",),
    ("data", "models"),
    ("score", "train", "analysis"),
    ("predict",),
    ("matrix",),
    ("replay",),
    ("forecast",),
    ("commands",),
    ("cli",),
    ("__main__", "__init__"),
)
LAYER = {stage: level for level, stages in enumerate(LAYERS) for stage in stages}

# Imports that still break the layers or form cycles, to be removed (the test fails on any other,
# and on an entry here that no longer occurs, so these only shrink).
KNOWN_WRONG: set[str] = set()
KNOWN_CYCLES: set[str] = set()


def _module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str:
    parts = ("forgetting_jax",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    """The stage (top-level package or module of forgetting_jax) that `module` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported module) of every forgetting_jax import in `path`, anywhere in the file;
    `from package import name` counts as importing `package.name` when that is a module."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("forgetting_jax")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("forgetting_jax"):
                target = node.module
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                as_module = root.parent / (candidate.replace(".", "/") + ".py")
                as_package = root.parent / candidate.replace(".", "/") / "__init__.py"
                found.append((node.lineno, candidate if as_module.exists() or as_package.exists() else target))
    return found


def _sources(root: pathlib.Path = PACKAGE) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*.py") if "resources" not in p.parts)


def _wrong_imports(root: pathlib.Path = PACKAGE) -> list[str]:
    """'file:line: stage imports module (upward|sideways)' for every import that breaks LAYERS."""
    wrong: list[str] = []
    for path in _sources(root):
        stage = _stage(_module_name(path, root))
        for line, target in _imports(path, root):
            other = _stage(target)
            if other != stage and LAYER.get(other, -1) >= LAYER[stage]:
                way = "sideways" if LAYER[other] == LAYER[stage] else "upward"
                entry = f"{path.relative_to(root.parent)}:{line}: {stage} imports {target} ({way})"
                if entry not in wrong:
                    wrong.append(entry)
    return wrong


def test_every_stage_has_a_layer():
    stages = {_stage(_module_name(path)) for path in _sources()}
    assert stages <= set(LAYER), f"stages without a layer in LAYERS: {sorted(stages - set(LAYER))}"


def _without_line(entry: str) -> str:
    where, _, what = entry.partition(": ")
    return f"{where.rsplit(':', 1)[0]}: {what}"


def test_imports_run_downward():
    wrong = {_without_line(entry): entry for entry in _wrong_imports()}
    new = [entry for key, entry in wrong.items() if key not in KNOWN_WRONG]
    assert not new, "imports that break the layers:\n" + "\n".join(new)
    fixed = sorted(KNOWN_WRONG - set(wrong))
    assert not fixed, "no longer wrong, remove from KNOWN_WRONG:\n" + "\n".join(fixed)


def test_no_import_cycles_inside_a_stage():
    graph: dict[str, set[str]] = {}
    for path in _sources():
        module = _module_name(path)
        graph[module] = {t for _, t in _imports(path) if _stage(t) == _stage(module) and t != module}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target in graph and not state.get(target):
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    new = sorted(set(cycles) - KNOWN_CYCLES)
    assert not new, "import cycles:\n" + "\n".join(new)
    fixed = sorted(KNOWN_CYCLES - set(cycles))
    assert not fixed, "no longer a cycle, remove from KNOWN_CYCLES:\n" + "\n".join(fixed)


def test_the_checker_sees_upward_and_sideways_imports(tmp_path):
    """The rule can fail: imports inside functions, upward and sideways, are reported."""
    root = tmp_path / "forgetting_jax"
    for stage in ("utils", "matrix", "score", "train"):
        (root / stage).mkdir(parents=True)
        (root / stage / "__init__.py").write_text("", encoding="utf-8")
    (root / "matrix" / "store.py").write_text("", encoding="utf-8")
    (root / "train" / "step.py").write_text("", encoding="utf-8")
    (root / "utils" / "probe.py").write_text("def f():\n    from forgetting_jax.matrix import store\n",
                                            encoding="utf-8")
    (root / "score" / "probe.py").write_text("from ..train.step import x\n", encoding="utf-8")
    (root / "matrix" / "fine.py").write_text("from forgetting_jax.score import probe\n", encoding="utf-8")
    assert sorted(_wrong_imports(root)) == [
        "forgetting_jax/score/probe.py:1: score imports forgetting_jax.train.step (sideways)",
        "forgetting_jax/utils/probe.py:2: utils imports forgetting_jax.matrix.store (upward)",
    ]
