"""The package's import structure: no import cycles, no imports of another module's private names.

The checker reads every module of ``featurepipe`` with :mod:`ast` (nothing is
imported) and collects its imports of other featurepipe modules:

* ``import featurepipe.x`` and ``from featurepipe.x import name`` (absolute) and
  ``from .x import name`` / ``from . import x`` (relative), at module level *and*
  inside functions — a function-level import is still a dependency: it only
  postpones the cycle to the first call. Imports under ``if TYPE_CHECKING:`` are
  ignored (they never run).
* ``from pkg import name`` where ``pkg.name`` is a submodule depends on that
  submodule; otherwise on ``pkg`` itself (its ``__init__`` for a package).
* A package ``__init__`` that exposes names lazily (``featurepipe._lazy``) does
  not depend on the submodules it names (nothing is imported until a name is
  looked up). A module that imports such a name, ``from featurepipe.cnn import
  CNNFeatures``, depends on the package *and* on the submodule defining the name:
  the look-up imports it.
* Importing an implicit parent package (``featurepipe.cnn`` runs before
  ``featurepipe.cnn.extractor``) is not an edge: that is how packages work, and a
  package re-exporting its submodules is not a cycle.

Private names: ``from featurepipe.x import _name`` (or ``x._name`` on a module
bound by an import) where ``_name`` is not a module is forbidden; a private
*module* (``featurepipe._validation``) is fine to import from by public names,
and dunder names (``__version__``) are public.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = "featurepipe"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE


# ---------------------------------------------------------------------------------------------
# The checker (pure functions over sources, so it is testable on synthetic packages)
@dataclass
class ModuleImports:
    """What one module imports from the package: the modules it depends on and the private names it takes."""

    edges: dict = field(default_factory=dict)  # dependency module -> first line number
    private: list = field(default_factory=list)  # (line, owner module, name)


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (its ``else`` branch runs, so it counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def lazy_names(source):
    """``{public name: relative submodule}`` of a package ``__init__`` that calls ``lazy_attributes(__name__, D)``."""
    tree = ast.parse(source)
    dicts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    dicts[target.id] = node.value
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                == "lazy_attributes" and len(node.args) == 2):
            mapping = node.args[1]
            if isinstance(mapping, ast.Name):
                mapping = dicts.get(mapping.id)
            if isinstance(mapping, ast.Dict):
                return {ast.literal_eval(k): ast.literal_eval(v) for k, v in zip(mapping.keys, mapping.values)}
    return {}


def _resolve_relative(module, is_package, level, target):
    """Absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    base = ".".join(parts)
    return f"{base}.{target}" if target else base


def module_imports(source, module, is_package, modules, lazy):
    """The featurepipe imports of one module.

    Parameters
    ----------
    source : str
        The module's code.
    module : str
        Its dotted name (``featurepipe.cnn`` for ``featurepipe/cnn/__init__.py``).
    is_package : bool
        Whether it is a package ``__init__``.
    modules : set of str
        Every module of the package (to tell a submodule from a name).
    lazy : dict
        ``{package: {name: absolute submodule}}`` for packages exposing names lazily.
    """
    result = ModuleImports()
    module_aliases = {}  # local name bound to a featurepipe module -> that module

    def add(target, line):
        if target != module and target in modules:
            result.edges[target] = min(line, result.edges.get(target, line))

    tree = ast.parse(source)
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name, node.lineno)
                    if alias.asname:
                        module_aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                owner = _resolve_relative(module, is_package, node.level, node.module)
            else:
                owner = node.module or ""
            if owner != PACKAGE and not owner.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                submodule = f"{owner}.{alias.name}"
                if submodule in modules:
                    add(submodule, node.lineno)
                    module_aliases[alias.asname or alias.name] = submodule
                    continue
                add(owner, node.lineno)
                provider = lazy.get(owner, {}).get(alias.name)
                if provider is not None:
                    add(provider, node.lineno)
                if _is_private(alias.name) and alias.name != "*":
                    result.private.append((node.lineno, provider or owner, alias.name))
    for node in _runtime_nodes(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and _is_private(node.attr)):
            owner = module_aliases[node.value.id]
            if f"{owner}.{node.attr}" not in modules:
                result.private.append((node.lineno, owner, node.attr))
    return result


def package_sources(root, package=PACKAGE):
    """``{module name: (source, is_package)}`` of every ``.py`` file under ``root`` (the package folder)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources[".".join([package, *parts])] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def analyse(sources):
    """``(graph, private)``: ``graph[module] = {dependency: line}``; private = [(module, line, owner, name)]."""
    modules = set(sources)
    lazy = {}
    for name, (source, is_package) in sources.items():
        if is_package:
            mapping = lazy_names(source)
            if mapping:
                lazy[name] = {key: _resolve_relative(name, True, 1, value.lstrip("."))
                              for key, value in mapping.items()}
    graph, private = {}, []
    for name, (source, is_package) in sources.items():
        found = module_imports(source, name, is_package, modules, lazy)
        graph[name] = found.edges
        private.extend((name, line, owner, attr) for line, owner, attr in found.private)
    return graph, private


def find_cycles(graph):
    """One cycle path per strongly connected component with a cycle, e.g. ``[a, b, a]`` (Tarjan's algorithm)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def visit(node):  # recursion depth is bounded by the number of modules (~100)
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        start = min(component)
        # Shortest path start -> ... -> start inside the component (breadth-first).
        parents, frontier, path = {start: None}, [start], None
        while frontier and path is None:
            following = []
            for node in frontier:
                for nxt in sorted(graph.get(node, ())):
                    if nxt == start:
                        chain = [node]
                        while parents[chain[-1]] is not None:
                            chain.append(parents[chain[-1]])
                        path = list(reversed(chain)) + [start]
                        break
                    if nxt in component and nxt not in parents:
                        parents[nxt] = node
                        following.append(nxt)
                if path is not None:
                    break
            frontier = following
        cycles.append(path)
    return sorted(cycles)


def describe_cycle(graph, cycle):
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# ---------------------------------------------------------------------------------------------
# The checker catches what it should (synthetic packages)
def _synthetic(files):
    return {name: (source, is_package) for name, (source, is_package) in files.items()}


def test_checker_finds_a_cycle_through_a_function_level_import():
    sources = _synthetic({
        "featurepipe": ("", True),
        "featurepipe.a": ("from .b import helper\n", False),
        "featurepipe.b": ("def helper():\n    from featurepipe import c\n    return c.thing()\n", False),
        "featurepipe.c": ("from . import a\n", False),
        "featurepipe.d": ("from .a import *\n", False),  # depends on the cycle, is not part of it
    })
    graph, private = analyse(sources)
    assert graph["featurepipe.b"] == {"featurepipe.c": 2}
    assert find_cycles(graph) == [["featurepipe.a", "featurepipe.b", "featurepipe.c", "featurepipe.a"]]
    assert describe_cycle(graph, find_cycles(graph)[0]) == (
        "featurepipe.a (line 1) -> featurepipe.b (line 2) -> featurepipe.c (line 1) -> featurepipe.a")
    assert private == []


def test_checker_finds_private_imports_and_allows_private_modules():
    sources = _synthetic({
        "featurepipe": ("", True),
        "featurepipe._validation": ("def is_int(v):\n    return True\n", False),
        "featurepipe.io": ("def _convert_channels(x):\n    return x\n", False),
        "featurepipe.sub": ("", True),
        "featurepipe.sub.x": (
            "from .._validation import is_int as _is_int\n"   # private module, public name: fine
            "from ..io import _convert_channels\n"              # private name: forbidden
            "from .. import io\n"
            "from .._version import __version__\n"              # dunder: public
            "def f(a):\n"
            "    return io._convert_channels(a)\n",              # private attribute of a module: forbidden
            False),
        "featurepipe._version": ("__version__ = '0'\n", False),
    })
    graph, private = analyse(sources)
    assert sorted(private) == [("featurepipe.sub.x", 2, "featurepipe.io", "_convert_channels"),
                               ("featurepipe.sub.x", 6, "featurepipe.io", "_convert_channels")]
    assert graph["featurepipe.sub.x"] == {"featurepipe._validation": 1, "featurepipe.io": 2, "featurepipe._version": 4}
    assert find_cycles(graph) == []


def test_checker_ignores_type_checking_and_follows_lazy_names():
    sources = _synthetic({
        "featurepipe": ("", True),
        "featurepipe.pkg": ("from .._lazy import lazy_attributes\n_LAZY = {'Thing': '.impl'}\n"
                            "__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)\n", True),
        "featurepipe._lazy": ("def lazy_attributes(p, n):\n    pass\n", False),
        "featurepipe.pkg.impl": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from ..user import User\nelse:\n    from .. import other\n", False),
        "featurepipe.user": ("from .pkg import Thing\n", False),
        "featurepipe.other": ("", False),
    })
    graph, _ = analyse(sources)
    # The lazy table of the package is not an import; importing a lazy name imports its submodule.
    assert graph["featurepipe.pkg"] == {"featurepipe._lazy": 1}
    assert graph["featurepipe.user"] == {"featurepipe.pkg": 1, "featurepipe.pkg.impl": 1}
    assert graph["featurepipe.pkg.impl"] == {"featurepipe.other": 5}
    assert find_cycles(graph) == []


def test_checker_treats_a_submodule_import_as_depending_on_that_submodule():
    sources = _synthetic({
        "featurepipe": ("", True),
        "featurepipe.pkg": ("from . import mod\n", True),  # eager re-export: the package depends on mod
        "featurepipe.pkg.mod": ("import featurepipe.pkg.helpers as h\n", False),
        "featurepipe.pkg.helpers": ("import featurepipe.pkg\n", False),  # the package __init__
    })
    graph, _ = analyse(sources)
    assert graph["featurepipe.pkg.mod"] == {"featurepipe.pkg.helpers": 1}
    assert find_cycles(graph) == [["featurepipe.pkg", "featurepipe.pkg.mod", "featurepipe.pkg.helpers",
                                   "featurepipe.pkg"]]


# ---------------------------------------------------------------------------------------------
# The package itself
@pytest.fixture(scope="module")
def package_graph():
    return analyse(package_sources(PACKAGE_DIR))


def test_package_is_found(package_graph):
    graph, _ = package_graph
    # A sanity check that the walk saw the package: a few modules every version has.
    assert {"featurepipe", "featurepipe.io", "featurepipe.cnn", "featurepipe.cnn.extractor"} <= set(graph)
    assert "featurepipe.io" in graph["featurepipe.sample"]


def test_no_import_cycles(package_graph):
    graph, _ = package_graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between featurepipe modules:\n" + "\n".join(
        "  " + describe_cycle(graph, cycle) for cycle in cycles)


def test_no_imports_of_private_names(package_graph):
    _, private = package_graph
    assert not private, "modules import another module's private names:\n" + "\n".join(
        f"  {module}:{line} imports {owner}.{name}" for module, line, owner, name in sorted(private))
