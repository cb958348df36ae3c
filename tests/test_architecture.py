"""The package's shape (docs/architecture.md): layers that import only downward, no import
cycles, and modules and functions short enough to read at once. Read from the source with
``ast``, so imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "melsm"

#: Layers from the bottom up; a module may import from its own layer and those below.
LAYERS = [
    {"melsm.errors", "melsm.datasets", "melsm.progress", "melsm.parallel"},
    {"melsm.model"},
    {"melsm.engine"},
    {"melsm.estimate"},
    {"melsm.results"},
    {"melsm.pipeline", "melsm.distributed"},
    {"melsm.reporting"},
    {"melsm.studies"},
    {"melsm.demo", "melsm.cli", "melsm.app", "melsm"},
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members if m != "melsm"):
            return index
    assert module == "melsm", module
    return len(LAYERS) - 1


def resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The melsm modules an ``import``/``from ... import`` statement in ``module`` loads."""
    if node.level:
        is_package = MODULES[module].name == "__init__.py"
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not (target == "melsm" or target.startswith("melsm.")):
        return []
    found = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return found or [target]


def imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "melsm" or a.name.startswith("melsm.")}
        elif isinstance(node, ast.ImportFrom):
            found |= set(resolve(module, node))
    return {f for f in found if f in MODULES and f != module}


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_only_go_down_the_layers():
    upward = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                    if layer_of(t) > layer_of(m))
    assert upward == []


def test_no_import_cycles():
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checks_see_imports():
    """The graph is not empty by mistake: known edges are found."""
    assert "melsm.model.spec" in GRAPH["melsm.model.design"]
    assert "melsm.engine.likelihood" in GRAPH["melsm.estimate.objective"]
    assert layer_of("melsm.reporting.plots") > layer_of("melsm.results.ml")
    assert len(MODULES) > 30


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_size(module):
    path = MODULES[module]
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
    assert long_functions(path) == []


def test_docstrings_point_to_sections_that_exist():
    """``docs/architecture.md, 'Section'`` in the code names a heading of that document."""
    import re

    doc = (SRC.parent / "docs" / "architecture.md").read_text()
    headings = {line.lstrip("#").strip().replace("`", "") for line in doc.splitlines() if line.startswith("## ")}
    cited = set()
    for path in MODULES.values():
        text = " ".join(path.read_text().split())
        cited |= set(re.findall(r"docs/architecture\.md, ['\"]([^'\"]+)['\"]", text))
    assert cited, "no citations found: the pattern is wrong"
    assert sorted(cited - headings) == []
