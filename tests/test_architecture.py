"""The code's shape, checked: labkit's import graph has no cycle (every import counted, lazy ones included),
no module is over 600 lines, and every exception class labkit defines derives from LabkitError and is drawn
in the error tree of labkit/errors.py. docs/architecture.md explains the layers these checks keep apart.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import labkit
from labkit.errors import LabkitError

PACKAGE = Path(labkit.__file__).resolve().parent
MAX_MODULE_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every labkit module `name` imports: at module level, inside functions, under TYPE_CHECKING (where a
    package's lazy exports are declared, labkit._lazy) and through `importlib.import_module("...")`.
    `from package import module` counts as importing the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # every module was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lazy_imports_are_part_of_the_graph() -> None:
    graph = import_graph()
    # labkit/__init__ imports its exports lazily (declared under TYPE_CHECKING); function-level imports count.
    assert {"labkit.lab.registry", "labkit.chaos", "labkit.report"} <= graph["labkit"]
    assert "labkit.measure.collect" in graph["labkit.scenarios.runs"]
    assert "labkit.report" in graph["labkit.runner.runs"]


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: count
        for name, path in modules().items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (lines): {long}"


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a labkit module, by qualified name (all modules imported)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(labkit.__path__, "labkit."):
        if info.name.endswith(".__main__"):  # runs a program when imported
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_exception_derives_from_labkit_error() -> None:
    classes = exception_classes()
    assert len(classes) > 30
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, LabkitError))
    assert strays == [], f"derive these from LabkitError (labkit/errors.py): {strays}"


def test_the_error_tree_is_drawn_whole_in_one_docstring() -> None:
    import labkit.errors

    drawn = labkit.errors.__doc__ or ""
    classes = exception_classes()
    missing = sorted(name for name, cls in classes.items() if not re.search(rf"\b{cls.__name__}\b", drawn))
    assert missing == [], f"draw these in labkit/errors.py's docstring: {missing}"
    names = [cls.__name__ for cls in classes.values()]
    assert len(names) == len(set(names)), "two exception classes share a name"


# The layers of docs/architecture.md, top-down; a module imports only from its own layer and those below.
LAYERS = {
    "labkit.cli": 7,
    "labkit.runner": 6,
    "labkit.scenarios": 6,
    "labkit.report": 6,
    "labkit.chaos": 5,
    "labkit.measure": 4,
    "labkit.lab": 3,
    "labkit.services": 2,
}
# Contracts every layer may use (leaves), and the one use of a higher layer: `up` loads the SLO rules.
ANY_LAYER_MAY_IMPORT = {"labkit.lab.contract", "labkit.measure.histograms"}
ALLOWED_UPWARD = {("labkit.lab.backend", "labkit.measure.slo.rules")}


def layer_of(module: str) -> int:
    """The layer of `module`: its package's; the public API (`labkit`) on top; 1 for the foundation."""
    if module == "labkit":
        return max(LAYERS.values())
    owners = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[owners[0]] if owners else 1


def test_folders_follow_the_layers() -> None:
    upward = sorted(
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
        and target not in ANY_LAYER_MAY_IMPORT
        and (module, target) not in ALLOWED_UPWARD
    )
    assert upward == [], f"these imports go up a layer (docs/architecture.md): {upward}"


def test_the_contracts_are_leaves() -> None:
    graph = import_graph()
    for contract in ANY_LAYER_MAY_IMPORT:
        assert all(layer_of(target) == 1 for target in graph[contract]), contract


def test_the_host_side_and_the_lab_s_manager_import_nothing_of_each_other() -> None:
    """They meet in labkit/lab/contract.py (and the lab directory), not in each other's code."""
    graph = import_graph()
    host = {"labkit.lab.backend", "labkit.lab.local", "labkit.lab.docker", "labkit.lab.registry"}
    manager = {m for m in graph if m.startswith("labkit.lab.manager")}
    assert all(not (graph[m] & manager) for m in host)
    assert all(not (graph[m] & host) for m in manager)
