"""The house rules of src/hyperfit, checked from its source (`python -m pytest -q tests/test_layout.py`).

- no import cycle among hyperfit's own modules, counting function-local imports too;
- `import hyperfit`, `hyperfit.config` and the study server load neither torch nor transformers;
- no function over 60 lines;
- an import inside a function is one of the torch boundary (torch and its kin, hyperfit modules that load
  them) or an optional extra of pyproject.toml; everything else belongs at the module's top.

Each test reads the source with `ast` and names every offender, so one run lists the whole job.
"""

import ast
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "hyperfit"

MAX_FUNCTION_LINES = 60
# Packages that load torch (or are torch): importing them costs seconds, so they may wait inside a function.
TORCH_BOUNDARY = {"torch", "transformers", "accelerate", "peft", "deepspeed", "safetensors"}
# Not torch, but as slow to import and needed by one command each (plots; the hub client for a download):
# `hyperfit --help` and the study server must not pay for them.
SLOW_TO_IMPORT = {"matplotlib", "huggingface_hub", "sklearn"}  # sklearn: the k-means of image palettes
LIGHT_ENTRY_POINTS = ["hyperfit", "hyperfit.config", "hyperfit.study.server"]
HEAVY = ["torch", "transformers"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def resolve(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement asks for, relative imports made absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = importer if modules()[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    # `from a import b` names the submodule a.b when there is one, else an attribute of a.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names]


def own_module(dotted: str) -> str | None:
    """The hyperfit module a dotted name lives in (its longest prefix that is a module), or None."""
    while dotted and dotted not in modules():
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports(name: str) -> list[tuple[ast.AST, str, bool]]:
    """(node, dotted name, inside a function?) for every import of a module, and import_module("...")."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend((node, target, in_function) for target in resolve(name, node))
        elif isinstance(node, ast.Call) and _is_import_module(node):
            found.append((node, node.args[0].value, in_function))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree(name), False)
    return found


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    named = (isinstance(func, ast.Name) and func.id == "import_module") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    return named and bool(call.args) and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)


def import_edges(top_only: bool = False) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) between hyperfit's own modules -> where each import sits (file:line)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in modules().items():
        for node, target, in_function in imports(name):
            own = own_module(target)
            if own and own != name and not (top_only and in_function):
                edges.setdefault((name, own), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return edges


def import_graph(top_only: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for importer, imported in import_edges(top_only):
        graph[importer].add(imported)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def closed_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def test_the_package_has_no_import_cycle():
    edges, graph = import_edges(), import_graph()
    cycles = find_cycles(graph)
    report = []
    for component in cycles:
        members = set(component)
        report.append("  " + " -> ".join(closed_path(graph, component)) + f"; all imports among these {len(members)}:")
        report += [f"    {a} -> {b} at {', '.join(where)}" for (a, b), where in sorted(edges.items())
                   if a in members and b in members]
    assert not cycles, "import cycles (function-local imports included):\n" + "\n".join(report)


def test_the_cycle_finder_finds_a_cycle_and_names_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert closed_path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    two = {"g": {"c", "e"}, "c": {"g"}, "e": {"g"}}  # one component, two cycles through g
    assert find_cycles(two) == [["c", "e", "g"]]


def loaded_heavy(module: str) -> str:
    """'' when importing `module` loads none of HEAVY, else which ones and the chain that loaded each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    code = f"import sys, {module}; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"`import {module}` failed:\n{done.stderr[-3000:]}"
    return "; ".join(f"{heavy} via {' <- '.join(import_chain(done.stderr, heavy))}"
                     for heavy in done.stdout.split())


def import_chain(importtime: str, target: str) -> list[str]:
    """Who imported `target`, read from `python -X importtime` (children print before their parent)."""
    rows = []
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            name = line.rsplit("|", 1)[1]
            rows.append((len(name) - len(name.lstrip()), name.strip()))
    at = next((i for i, (_, name) in enumerate(rows) if name == target), None)
    if at is None:
        return [target]
    chain, depth = [target], rows[at][0]
    for level, name in rows[at + 1:]:
        if level < depth:
            chain.append(name)
            depth = level
    return chain


def test_light_entry_points_load_no_torch_or_transformers():
    offenders = {m: why for m in LIGHT_ENTRY_POINTS if (why := loaded_heavy(m))}
    assert not offenders, "these must stay light (no torch, no transformers):\n" + "\n".join(
        f"  import {m}: {why}" for m, why in offenders.items()
    )


def long_functions() -> list[str]:
    found = []
    for name, path in modules().items():
        for node in ast.walk(tree(name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}() is {lines} lines")
    return found


def test_no_function_is_over_60_lines():
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n  " + "\n  ".join(found)


@cache
def optional_extras() -> frozenset[str]:
    """Import names of pyproject's optional dependencies (not the dev extra): these may be imported late."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = set()
    for extra, requirements in extras.items():
        if extra != "dev":
            for req in requirements:
                names.add(req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower())
    return frozenset(names - {"numpy"})  # numpy is in the study extra but is a plain dependency too


@cache
def loads_torch(module: str) -> bool:
    """Whether a hyperfit module loads the torch boundary (or a slow or optional package) from its module top,
    itself or through another."""
    graph, seen, todo = import_graph(top_only=True), set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for _, target, in_function in imports(m):
            top = target.split(".")[0]
            if not in_function and (top in TORCH_BOUNDARY | SLOW_TO_IMPORT or top.lower() in optional_extras()):
                return True
        todo.extend(graph[m])
    return False


def allowed_late(target: str) -> bool:
    top = target.split(".")[0]
    if top in TORCH_BOUNDARY | SLOW_TO_IMPORT or top.lower() in optional_extras():
        return True
    own = own_module(target)
    return own is not None and loads_torch(own)


def late_imports() -> list[str]:
    found = []
    for name, path in modules().items():
        for node, target, in_function in imports(name):
            if in_function and not allowed_late(target):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    return sorted(set(found), key=lambda s: (s.split(":")[0], int(s.split(":")[1].split()[0])))


def test_function_level_imports_are_only_the_torch_boundary():
    found = late_imports()
    assert not found, (
        "imports inside functions that should sit at the module's top (only torch, transformers, accelerate, "
        "peft, deepspeed, safetensors, hyperfit modules that load them, and optional extras may wait):\n  "
        + "\n  ".join(found)
    )
