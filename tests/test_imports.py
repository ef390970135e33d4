"""Import structure: no cycle among nezha modules, and the data-preparation commands never load torch.

The graph is read from the source with ``ast`` (nothing is imported): every ``import``/``from ... import`` of a nezha
module, at module level or inside functions, plus ``importlib.import_module`` calls (a constant, an f-string such
as ``f"nezha.commands.{name}"`` meaning every module of that package, or a lookup in a module-level dict of names).
A function-level import that closes a cycle still couples the two modules both ways, so it counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "nezha"

# `nezha prepare` / `nezha vocab` must start fast: these modules may not pull torch in.
LIGHT_MODULES = ("nezha", "nezha.settings", "nezha.cli", "nezha.data.tokenization", "nezha.data.pretraining",
                 "nezha.commands.prepare", "nezha.commands.vocab")


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (``__init__`` names its package)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(name: str | None, level: int, module: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _import_module_targets(call: ast.Call, dict_literals: dict[str, list[str]], modules: set[str]) -> set[str]:
    """Modules an ``importlib.import_module(...)`` call can load."""
    if not call.args:
        return set()
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return {m for m in modules if m.startswith(prefix) and m != prefix.rstrip(".")}
    if isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name):
        return set(dict_literals.get(arg.value.id, []))
    return set()


def _is_import_module(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id == "import_module"
    )


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The nezha modules that ``module`` imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    dict_literals = {
        t.id: [v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, module, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)  # `from pkg import submodule` loads the submodule
        elif isinstance(node, ast.Call) and _is_import_module(node):
            found.update(_import_module_targets(node, dict_literals, modules))
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    names = set(files)
    return {m: imports_of(m, p, names) for m, p in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each import cycle: every strongly connected component with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(components)


def describe_cycle(component: list[str], graph: dict[str, set[str]]) -> str:
    """The component's modules and the imports between them (the ones to cut)."""
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & set(component))]
    return f"{', '.join(component)}\n    imports: {'; '.join(edges)}"


# ------------------------------------------------------------------------------------------------ the checker itself
def test_find_cycles_reports_the_modules_of_a_cycle():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert find_cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert describe_cycle(["d", "e"], graph) == "d, e\n    imports: d -> e; e -> d"
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_imports_of_sees_function_level_relative_and_dynamic_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import importlib\n"
        "TABLE = {'x': 'nezha.b'}\n"
        "def f():\n"
        "    from ..b import thing\n"
        "    from nezha.pkg import c\n"
        "    importlib.import_module(f'nezha.pkg.{name}')\n"
        "    importlib.import_module(TABLE[name])\n",
        encoding="utf-8",
    )
    modules = {"nezha", "nezha.b", "nezha.pkg", "nezha.pkg.c", "nezha.pkg.d", "nezha.sub.m"}
    assert imports_of("nezha.sub.m", src, modules) == {"nezha.b", "nezha.pkg.c", "nezha.pkg.d"}


# ------------------------------------------------------------------------------------------------ the package
def test_graph_covers_the_package():
    graph = import_graph()
    assert {"nezha.model.modeling", "nezha.cli", "nezha.train.checkpoint"} <= set(graph)
    assert "nezha.model.config" in graph["nezha.model.modeling"]
    assert "nezha.commands.prepare" in graph["nezha.cli"]  # found through importlib.import_module(f"...")


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among nezha modules:\n  " + "\n  ".join(describe_cycle(c, graph) for c in cycles)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_module_does_not_import_torch(module):
    code = f"import sys, {module}; heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules); print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "torch" not in out.stdout, f"importing {module} loads torch: {out.stdout.strip()}"


# The layers README's "How the code is laid out" lists, bottom-up: a module may import its own layer and those below.
LAYERS = (("io",), ("settings", "errors"), ("data",), ("model",), ("convert",), ("tasks",), ("train",),
          ("inference",), ("serve",), ("commands", "cli", "__main__"))


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a module's top-level part (None for the package itself, whose names load lazily)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def test_every_module_sits_in_a_layer():
    assert all(layer_of(m) is not None for m in import_graph() if m != PACKAGE)


def test_imports_go_down_the_layers_only():
    graph = import_graph()
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets
              if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)]
    assert not upward, "imports against README's layer order:\n" + "\n".join(sorted(upward))
