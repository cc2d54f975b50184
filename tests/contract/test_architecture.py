"""The package's shape, checked from its source: the one-way import rules between the rooms, no
import cycles, and small modules and functions (docs/architecture.md states the rules).

The import graph is built statically with `ast`, from every import statement wherever it sits
(module level, inside functions, under `if TYPE_CHECKING:`), because a lazy import is still a
dependency: it runs the first time its function does. One runtime check backs the static ones
up: the CLI starts without torch.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "kubetune"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# A longer function must say why in its docstring, on a line that starts with this marker.
LONG_MARKER = re.compile(r"^\s*Why long:", re.MULTILINE)

LAUNCHER = ("kubetune.launch", "kubetune.cli", "kubetune.cli_cluster")
WORKLOAD = ("kubetune.workload",)
CONTRACT = ("kubetune.contract",)


def _in(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _has_code(path: Path) -> bool:
    """Whether importing a package runs anything: statements beyond a docstring and
    `from __future__` imports. Importing `a.b.c` runs every parent `__init__`, so a parent with
    code is a dependency of whoever imports its submodules."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        return True
    return False


def _imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import statement in `path` names, relative imports resolved.
    `from a import b` yields `a.b` too (b may be a submodule)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def _graph() -> tuple[nx.DiGraph, dict[str, set[str]]]:
    """(kubetune's internal import graph, the third-party top-level modules each module imports).

    `import a.b.c` is an edge to `a.b.c` and to each parent package whose `__init__` has code,
    because importing a submodule runs its parents first. A module's own ancestors are the
    exception: Python has always run them before the module itself, so `jobs` importing its
    sibling `render.naming` does not depend on `render/__init__` (naming the parent package
    itself, `from kubetune.launch.render import x`, still does)."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    external: dict[str, set[str]] = {}
    for module, path in modules.items():
        external[module] = set()
        for name in _imported_names(module, path):
            top = name.split(".")[0]
            if top != "kubetune":
                external[module].add(top)
                continue
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # the target and its parent packages
                target = ".".join(parts[:i])
                if target not in modules or target == module:
                    continue
                if i == len(parts) or (_has_code(modules[target]) and not module.startswith(target + ".")):
                    graph.add_edge(module, target)
    return graph, external


def _path_between(source: str, target: str) -> str:
    return " -> ".join(nx.shortest_path(_graph()[0], source, target))


def test_no_import_cycles():
    graph, _ = _graph()
    cycles = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            cycle = nx.find_cycle(graph.subgraph(component))
            cycles.append(" -> ".join([edge[0] for edge in cycle] + [cycle[-1][1]]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


@cache
def _train_only_modules() -> frozenset[str]:
    """Top-level modules of the distributions only the `train` extra installs (torch,
    transformers, ...): a plain `pip install kubetune` does not have them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def dist(requirement: str) -> str:
        return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    base = {dist(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    # A library another launcher-side extra also installs (matplotlib: `plot`) is not train-only.
    others = {dist(r) for name, reqs in extras.items() if name not in ("train", "dev") for r in reqs}
    train = {dist(r) for r in extras["train"]} - base - others
    modules = {"torch"}
    for top, dists in importlib.metadata.packages_distributions().items():
        if any(d.lower().replace("_", "-") in train for d in dists):
            modules.add(top)
    return frozenset(modules)


def test_launcher_imports_neither_the_workload_nor_training_libraries():
    graph, external = _graph()
    problems = []
    for module in filter(lambda m: _in(m, LAUNCHER), graph):
        for reached in nx.descendants(graph, module) | {module}:
            if _in(reached, WORKLOAD):
                problems.append(f"{_path_between(module, reached)}")
            for lib in sorted(external[reached] & _train_only_modules()):
                problems.append(f"{_path_between(module, reached) if reached != module else module} -> {lib}")
    assert not problems, "the launcher must run without torch and the workload:\n" + "\n".join(sorted(set(problems)))


def test_workload_never_imports_the_launcher():
    graph, _ = _graph()
    problems = [
        _path_between(module, reached)
        for module in graph
        if _in(module, WORKLOAD)
        for reached in nx.descendants(graph, module)
        if _in(reached, LAUNCHER)
    ]
    assert not problems, "the workload must not import the launcher:\n" + "\n".join(sorted(problems))


def test_contract_and_storage_import_nothing_of_kubetune_above_them():
    """The contract is the floor every room stands on; storage stands on the contract only."""
    graph, _ = _graph()
    problems = []
    for module in graph:
        if _in(module, CONTRACT):
            allowed = CONTRACT
        elif module == "kubetune.storage":
            allowed = CONTRACT + ("kubetune.storage",)
        elif _in(module, ("kubetune.registry",)):  # shared by the launcher verbs and the workload
            allowed = CONTRACT + ("kubetune.storage", "kubetune.registry")
        else:
            continue
        problems += [f"{module} -> {t}" for t in graph.successors(module) if not _in(t, allowed)]
    assert not problems, "\n".join(sorted(problems))


def test_cli_starts_without_torch():
    code = (
        "import sys; from kubetune.cli import main; from kubetune.contract.spec import load_spec; "
        "load_spec('jobs/quickstart.yaml');\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'; print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


def test_modules_are_small():
    too_long = []
    for module, path in _modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(too_long)


def test_functions_are_short_or_say_why():
    too_long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and not LONG_MARKER.search(ast.get_docstring(node) or ""):
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines without a 'Why long:' line in their docstring:\n"
        + "\n".join(too_long)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import b", {"kubetune.x", "kubetune.x.b"}),
        ("from .b import c", {"kubetune.x.b", "kubetune.x.b.c"}),
        ("from ..y import z", {"kubetune.y", "kubetune.y.z"}),
        ("def f():\n    import torch.nn\n", {"torch.nn"}),
    ],
)
def test_relative_and_lazy_imports_are_resolved(tmp_path, source, expected):
    """The graph builder itself: relative imports resolve against the module's package, and an
    import inside a function counts."""
    path = tmp_path / "a.py"
    path.write_text(source)
    assert _imported_names("kubetune.x.a", path) == expected
