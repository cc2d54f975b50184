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

# The rooms: every top-level module or package of src/kubetune, and the side it stands on. The
# launcher runs on a laptop (never the workload, never torch); the workload runs in the pod
# (never the launcher); the contract is the floor both stand on; a shared room is imported by
# both sides. A module in no room fails `test_every_module_belongs_to_a_room`.
LAUNCHER_SIDE, WORKLOAD_SIDE, FLOOR, SHARED = "launcher", "workload", "floor", "shared"
ROOMS = {
    "cli": LAUNCHER_SIDE,
    "launch": LAUNCHER_SIDE,
    "workload": WORKLOAD_SIDE,
    "contract": FLOOR,
    "storage": SHARED,
    "store_faults": SHARED,
    "store_clouds": SHARED,
    "integrity": SHARED,
    "registry": SHARED,
    "figures": SHARED,
}


def _rooms_of(side: str) -> tuple[str, ...]:
    return tuple(f"kubetune.{room}" for room, of in ROOMS.items() if of == side)


LAUNCHER = _rooms_of(LAUNCHER_SIDE)
WORKLOAD = _rooms_of(WORKLOAD_SIDE)
CONTRACT = _rooms_of(FLOOR)


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
        elif module in ("kubetune.store_faults", "kubetune.store_clouds"):
            allowed = CONTRACT
        elif module == "kubetune.storage":
            allowed = CONTRACT + ("kubetune.storage", "kubetune.store_faults", "kubetune.store_clouds")
        elif module == "kubetune.integrity":  # the commit markers' manifests, on storage
            allowed = CONTRACT + ("kubetune.storage", "kubetune.store_faults", "kubetune.integrity")
        elif _in(module, ("kubetune.registry",)):  # shared by the launcher verbs and the workload
            allowed = CONTRACT + ("kubetune.storage", "kubetune.store_faults", "kubetune.integrity", "kubetune.registry")
        else:
            continue
        problems += [f"{module} -> {t}" for t in graph.successors(module) if not _in(t, allowed)]
    assert not problems, "\n".join(sorted(problems))


def test_cli_starts_without_torch():
    code = (
        "import sys; from kubetune.cli.main import main; from kubetune.contract.spec.job import load_spec; "
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


MAX_MODULES_PER_FOLDER = 10
# Test folders that mirror no module: tests of several modules working together (the CLI as a
# user runs it) and the repository-wide rules (this file, names, install, linters, images, docs).
UNMIRRORED_TEST_FOLDERS = ("e2e", "project", "fakes")


def test_no_folder_holds_more_than_ten_modules():
    """A room a reader can take in at once: a folder of more modules is split into rooms."""
    crowded = []
    for folder in sorted({p.parent for p in PACKAGE.rglob("*.py")}):
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        if len(modules) > MAX_MODULES_PER_FOLDER:
            crowded.append(f"{folder.relative_to(REPO)}: {len(modules)} modules")
    assert not crowded, f"folders of more than {MAX_MODULES_PER_FOLDER} modules:\n" + "\n".join(crowded)


def test_every_package_says_what_its_room_owns():
    silent = [
        str(init.relative_to(REPO))
        for init in PACKAGE.rglob("__init__.py")
        if not (ast.get_docstring(ast.parse(init.read_text())) or "").strip()
    ]
    assert not silent, "packages without a docstring saying what the room owns:\n" + "\n".join(sorted(silent))


def _mirrored_module(test_file: Path) -> Path | None:
    """The module (or package) a test file is named after, in the folder its own folder
    mirrors: tests/a/b/test_c.py -> src/kubetune/a/b/c.py or c/; test_c_aspect.py names c too."""
    folder = PACKAGE.joinpath(*test_file.parent.relative_to(REPO / "tests").parts)
    name = test_file.stem.removeprefix("test_")
    for candidate in sorted(folder.glob("*"), key=lambda p: -len(p.stem)) if folder.is_dir() else ():
        module = candidate.stem
        is_module = candidate.suffix == ".py" and module != "__init__"
        is_package = candidate.is_dir() and (candidate / "__init__.py").exists()
        if (is_module or is_package) and (name == module or name.startswith(module + "_")):
            return candidate
    return None


def test_tests_mirror_the_modules_they_test():
    """A module's tests sit in the folder that mirrors its folder and are named after it;
    tests of several modules working together sit in tests/e2e/."""
    tests = REPO / "tests"
    stray = [
        str(path.relative_to(REPO))
        for path in sorted(tests.rglob("test_*.py"))
        if path.relative_to(tests).parts[0] not in UNMIRRORED_TEST_FOLDERS and _mirrored_module(path) is None
    ]
    assert not stray, "test files named after no module in the folder they mirror:\n" + "\n".join(stray)


_MUTATORS = {"append", "extend", "insert", "update", "add", "clear", "pop", "popitem", "remove", "discard", "setdefault"}


def _module_level_mutable_state(path: Path) -> list[str]:
    """Module-level state a call can change: `global` statements anywhere, and module-level
    lists, dicts or sets that are either not named as constants (UPPER_CASE) or changed by the
    module itself (item assignment, `del`, or a mutating method)."""
    tree = ast.parse(path.read_text())
    found = [f"line {n.lineno}: global {', '.join(n.names)}" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    containers = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
    mutable_calls = {"list", "dict", "set", "defaultdict", "OrderedDict", "Counter", "deque"}
    names: dict[str, int] = {}
    for node in tree.body:
        targets, value = [], None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        called = isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None))
        if isinstance(value, containers) or called in mutable_calls:
            names.update({t.id: node.lineno for t in targets if isinstance(t, ast.Name)})
    names = {name: line for name, line in names.items() if not re.fullmatch(r"__\w+__", name)}  # __all__
    for name, line in names.items():
        if not re.fullmatch(r"_?[A-Z][A-Z0-9_]*", name):
            found.append(f"line {line}: {name} is a mutable module-level value")
    for node in ast.walk(tree):
        target = None
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            for t in getattr(node, "targets", None) or [node.target]:
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                    target = t.value.id
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS:
            if isinstance(node.func.value, ast.Name):
                target = node.func.value.id
        if target in names and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", target):
            found.append(f"line {node.lineno}: constant {target} is changed")
    return found


def test_no_module_level_mutable_state():
    """State travels in `Run` or as arguments, never in module globals a call sets and a
    later call reads (issue 21: pinned files and row counts once lived in such globals)."""
    problems = [
        f"{path.relative_to(REPO)}: {problem}"
        for path in _modules().values()
        for problem in _module_level_mutable_state(path)
    ]
    assert not problems, "module-level mutable state:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("CACHE = {}\ndef f(k, v):\n    CACHE[k] = v\n", True),
        ("_ROWS = {}\ndef f():\n    _ROWS.clear()\n", True),
        ("rows = []\n", True),
        ("def f():\n    global X\n    X = 1\n", True),
        ("FORMATS = {'.csv': 'csv'}\ndef f(x):\n    return FORMATS[x]\n", False),
        ("def f():\n    seen = set()\n    seen.add(1)\n", False),
    ],
)
def test_the_mutable_state_check_itself(tmp_path, source, flagged):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert bool(_module_level_mutable_state(path)) is flagged


def _top_level_entries(package: Path) -> set[str]:
    """The names of a package's top-level modules and sub-packages (a folder holding any `.py`
    file counts, `__init__` or not): the candidates for rooms."""
    names = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name for p in package.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    return names


def _rooms_problems(package: Path, rooms: dict[str, str]) -> list[str]:
    """Top-level entries declared in no room, and declared rooms that hold no module."""
    found = _top_level_entries(package)
    return [f"{package.name}/{name}: in no room (declare its side in ROOMS)" for name in sorted(found - set(rooms))] + [
        f"{package.name}/{name}: a declared room with no module" for name in sorted(set(rooms) - found)
    ]


def test_every_module_belongs_to_a_room():
    """The import rules apply to rooms; a new top-level module or package no rule names would
    escape them all, so it must first be given a side."""
    assert set(ROOMS.values()) <= {LAUNCHER_SIDE, WORKLOAD_SIDE, FLOOR, SHARED}
    problems = _rooms_problems(PACKAGE, ROOMS)
    assert not problems, "\n".join(problems)
    unplaced = [m for m in _modules() if m != "kubetune" and not _in(m, tuple(f"kubetune.{r}" for r in ROOMS))]
    assert not unplaced, f"modules in no room: {unplaced}"


def test_a_module_in_no_room_is_found(tmp_path):
    """The room check itself: an undeclared module or package, and a room that vanished."""
    package = tmp_path / "kubetune"
    (package / "cli").mkdir(parents=True)
    (package / "cli" / "__init__.py").write_text('"""cli"""\n')
    (package / "__init__.py").write_text('"""root"""\n')
    assert _rooms_problems(package, {"cli": LAUNCHER_SIDE}) == []
    (package / "helpers.py").write_text("X = 1\n")
    (package / "extras" / "deep").mkdir(parents=True)
    (package / "extras" / "deep" / "thing.py").write_text("Y = 2\n")
    assert _rooms_problems(package, {"cli": LAUNCHER_SIDE, "gone": SHARED}) == [
        "kubetune/extras: in no room (declare its side in ROOMS)",
        "kubetune/helpers: in no room (declare its side in ROOMS)",
        "kubetune/gone: a declared room with no module",
    ]


def test_shared_rooms_import_neither_side():
    """A shared room (storage, registry, figures) is imported by the launcher and the workload
    alike, so it may stand on the floor and on other shared rooms, never on either side."""
    graph, _ = _graph()
    shared = _rooms_of(SHARED)
    problems = [
        f"{module} -> {target}"
        for module in graph
        if _in(module, shared)
        for target in graph.successors(module)
        if _in(target, LAUNCHER + WORKLOAD)
    ]
    assert not problems, "\n".join(sorted(problems))


# Where the environment may be read: the workload's entrypoints (which read the pod's once,
# `arguments.pod_env`, and pass it down), the launcher (its entrypoint is the CLI, and it hands
# environments to the processes it starts), and storage's AWS_ENDPOINT_URL* and STORAGE_EMULATOR_HOST
# (the AWS and Google SDKs' own variables, which botocore and gcsfs themselves read).
ENV_READERS = ("kubetune.workload.entrypoints", "kubetune.cli", "kubetune.launch", "kubetune.storage")
_ENV_WRITES = {"update", "clear"}  # methods that only change the environment
_ENV_WRITES_UNLESS_USED = {"pop", "popitem", "setdefault"}  # they return a value: using it is a read


def _environment_reads(path: Path) -> list[str]:
    """Every place `path` reads the process environment: `os.environ` (or `environb`, or an
    imported `environ`) used in any way but an item assignment or deletion, `update`/`clear`,
    or a `pop`/`setdefault` whose result is thrown away; and every `os.getenv` call."""
    tree = ast.parse(path.read_text())
    os_names, environ_names, getenv_names = {"os"}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            environ_names |= {a.asname or a.name for a in node.names if a.name in ("environ", "environb")}
            getenv_names |= {a.asname or a.name for a in node.names if a.name in ("getenv", "getenvb")}
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}

    def is_os(node: ast.AST, attrs: tuple[str, ...]) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr in attrs and isinstance(node.value, ast.Name)
                and node.value.id in os_names)

    def is_write(node: ast.AST) -> bool:
        parent = parents.get(node)
        if isinstance(parent, ast.Subscript) and parent.value is node:
            return isinstance(parent.ctx, (ast.Store, ast.Del))
        if isinstance(parent, ast.Attribute) and isinstance(call := parents.get(parent), ast.Call) and call.func is parent:
            unused = isinstance(parents.get(call), ast.Expr)
            return parent.attr in _ENV_WRITES or (parent.attr in _ENV_WRITES_UNLESS_USED and unused)
        return False

    found = []
    for node in ast.walk(tree):
        environ = is_os(node, ("environ", "environb")) or (isinstance(node, ast.Name) and node.id in environ_names)
        getenv = is_os(node, ("getenv", "getenvb")) or (isinstance(node, ast.Name) and node.id in getenv_names)
        if isinstance(parents.get(node), (ast.ImportFrom, ast.alias)):
            continue
        if (environ and not is_write(node)) or getenv:
            found.append(f"line {node.lineno}: {ast.unparse(parents.get(node) or node)}")
    return found


def test_the_environment_is_read_only_at_the_entrypoints():
    """Below the entrypoints, values come in as arguments (a `PodEnv`, a `Run`), so a function
    says what it depends on and a test sets it without touching the process environment."""
    reads = {module: _environment_reads(path) for module, path in _modules().items()}
    problems = [f"{_modules()[m].relative_to(REPO)}: {r}" for m, found in reads.items() for r in found
                if not _in(m, ENV_READERS)]
    assert not problems, "environment read outside the entrypoints (pass it down instead):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("import os\nx = os.environ.get('A')\n", 1),
        ("import os\nx = os.environ['A']\n", 1),
        ("import os\nx = 'A' in os.environ\n", 1),
        ("import os\nenv = dict(os.environ)\n", 1),
        ("import os\nx = os.getenv('A', '')\n", 1),
        ("import os as o\nx = o.environ.get('A')\n", 1),
        ("from os import environ\nx = environ.get('A')\n", 1),
        ("from os import getenv\nx = getenv('A')\n", 1),
        ("import os\nfolder = os.environ.setdefault('A', 'b')\n", 1),
        ("import os\nos.environ['A'] = 'b'\ndel os.environ['A']\n", 0),
        ("import os\nos.environ.setdefault('A', 'b')\nos.environ.pop('A', None)\nos.environ.update(A='b')\n", 0),
        ("from os import environ\nenviron['A'] = 'b'\n", 0),
        ("import os\nx = os.path.join('a', 'b')\n", 0),
    ],
)
def test_the_environment_read_check_itself(tmp_path, source, reads):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert len(_environment_reads(path)) == reads, _environment_reads(path)


def _rooms_table() -> dict[str, str]:
    """docs/architecture.md's rooms table: the room's path (`contract/spec/`, `storage`) -> its row."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## The rooms\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1).rstrip("/")] = match.group(2)
    return rows


def test_every_module_is_named_in_the_architecture_map():
    """docs/architecture.md is the map: each module is named (in backticks) in the row of the
    room that holds it, and each room of the package has a row."""
    rows = _rooms_table()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py":
            folder = relative.parent.as_posix()
            if folder != "." and folder not in rows:
                missing.append(f"{folder}/: no row for this room")
            continue
        folder = relative.parent.as_posix()
        room = relative.stem if folder == "." else folder
        if room not in rows:
            missing.append(f"{relative}: no row for room {room!r}")
        elif folder != "." and f"`{relative.stem}`" not in rows[room]:
            missing.append(f"{relative}: not named in the row of `{folder}/`")
    assert not missing, "docs/architecture.md does not name:\n" + "\n".join(missing)
