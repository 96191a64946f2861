"""The package's layering, checked on the source: no import cycle, no upward import.

The import graph is built from the source with :mod:`ast` (every ``import``/``from`` statement, at
module level or inside functions; ``if TYPE_CHECKING:`` blocks excluded, since they never run), so
a lazy import inside a function counts as a dependency too: a cycle that works only because of the
order of imports in ``placement/__init__.py`` is still a cycle.

Units are the top-level modules and subpackages of ``placement`` (``placement.cli``,
``placement.evaluate``, ``placement.formulations``, ...) and ``placement_runtime``.  The data flows
one way (ARCHITECTURE.md): trace/topology -> stats -> formulation -> MILP model -> backend ->
solution -> placement -> evaluate / export / runtime; the rules below are that picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph(root: Path) -> tuple[nx.DiGraph, nx.DiGraph]:
    """``(top_level, every)``: module -> imported module edges among the modules under ``root``.

    ``top_level`` holds the imports that run when the module is imported (module scope, class
    bodies); ``every`` adds those inside functions.  External imports are kept as edges to their
    top-level package name (``torch``, ``highspy``...).
    """
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    top, every = nx.DiGraph(), nx.DiGraph()
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        top.add_node(name)
        every.add_node(name)

        def targets(node: ast.Import | ast.ImportFrom, name: str = name, is_pkg: bool = is_pkg) -> list[str]:
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                found = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            out = []
            for target in found:
                probe = target
                while probe and probe not in modules:
                    probe = probe.rpartition(".")[0]
                out.append(probe or target.split(".")[0])
            return out

        def walk(node: ast.AST, at_import_time: bool, name: str = name) -> None:
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    continue
                now = at_import_time and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in targets(child):
                        if target != name:
                            every.add_edge(name, target)
                            if now:
                                top.add_edge(name, target)
                walk(child, now, name)

        walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), True)
    return top, every


#: Units that are one: the evaluator's code lives in the package ``placement.evaluation`` and the
#: module ``placement.evaluate`` re-exports it (``placement.evaluate`` is also the facade's function).
UNIT_ALIASES = {"placement.evaluation": "placement.evaluate"}


def unit_of(module: str) -> str:
    """``placement.formulations.exflow.model`` -> ``placement.formulations``; ``torch.nn`` -> ``torch``."""
    parts = module.split(".")
    unit = ".".join(parts[:2]) if parts[0] == "placement" and len(parts) > 1 else parts[0]
    return UNIT_ALIASES.get(unit, unit)


def unit_graph(every: nx.DiGraph) -> nx.DiGraph:
    """Edges between units; imports of the facade ``placement`` itself are kept as ``placement``."""
    units = nx.DiGraph()
    for a, b in every.edges:
        ua, ub = unit_of(a), unit_of(b)
        if ua != ub:
            units.add_edge(ua, ub)
    return units


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Every elementary cycle, shortest first (empty when the graph is acyclic)."""
    return sorted((sorted(c) for c in nx.simple_cycles(graph)), key=lambda c: (len(c), c))


#: unit -> units it must never import (directly), with the reason.
FORBIDDEN: dict[str, tuple[tuple[str, ...], str]] = {
    "placement": (("placement_runtime", "torch"), "the library never imports the runtime or torch"),
    "placement.registry": (("placement.methods", "placement.formulations", "placement.baselines",
                            "placement.backends", "placement.evaluate", "placement.cli"),
                           "the registry is a leaf every method module imports"),
    "placement.milp": (("placement.backends", "placement.formulations", "placement.methods", "placement.trace",
                        "placement.topology", "placement.stats"), "the neutral model knows no solver and no data"),
    "placement.backends": (("placement.trace", "placement.topology", "placement.stats", "placement.formulations",
                            "placement.methods", "placement.evaluate", "networkx"),
                           "backends see arrays, never traces or graphs"),
    "placement.formulations": (("highspy", "ortools", "pyscipopt", "gurobipy", "placement.methods",
                                "placement.evaluate", "placement.cli", "placement.api"),
                               "formulations build models from statistics and costs, reach solvers only through "
                               "placement.backends, and never depend on the evaluator, the catalogue or the CLI"),
    "placement.evaluate": (("placement.formulations", "placement.methods", "placement.baselines",
                            "placement.backends", "placement.milp", "placement.registry", "placement.solution",
                            "placement.api", "placement.cli"), "the evaluator is independent of every method"),
    "placement.search": (("highspy", "ortools", "placement.methods", "placement.cli", "placement.api",
                          "placement.backends", "placement.milp"),
                         "the step-time search scores placements with the evaluator; it solves no MILP and never "
                         "depends on the catalogue or the CLI"),
    "placement.trace": (("placement.stats", "placement.topology", "placement.evaluate", "placement.methods"),
                        "traces are the first layer"),
    "placement.topology": (("placement.trace", "placement.stats", "placement.evaluate", "placement.methods"),
                           "topologies are the first layer"),
}
#: Units nothing in the library may import, except the CLI itself.
CLI_ONLY = ("placement.cli", "placement.__main__")
#: The one allowed exception to "no torch in placement": interop reads and writes the ``.pt`` files of
#: serving stacks with torch imported inside those functions (never at import time).
LAZY_TORCH_ALLOWED = ("placement.interop",)


def _in_library(unit: str) -> bool:
    return unit == "placement" or unit.startswith("placement.")


def layering_violations(root: Path) -> list[str]:
    """Every broken rule of the package under ``root`` as one line each (empty when all hold)."""
    top, every = import_graph(root)
    problems = [f"import cycle at import time: {' -> '.join(c)}" for c in cycles(top)]
    for a, b in top.edges:
        if _in_library(unit_of(a)) and unit_of(b) == "torch":
            problems.append(f"{a} imports torch at import time: the library never imports torch")
    units = unit_graph(every)
    units.remove_nodes_from([u for u in list(units) if u == "placement"])  # the facade re-exports everything
    problems += [f"package cycle: {' -> '.join(c)}" for c in cycles(units)]
    for a, b in every.edges:
        ua, ub = unit_of(a), unit_of(b)
        for unit, (banned, why) in FORBIDDEN.items():
            applies = ua == unit or (unit == "placement" and _in_library(ua))
            if not applies or ub not in banned:
                continue
            if unit == "placement" and ub == "torch" and ua in LAZY_TORCH_ALLOWED and not top.has_edge(a, b):
                continue
            problems.append(f"{a} imports {b}: {why}")
        if ub in CLI_ONLY and ua not in CLI_ONLY and _in_library(ua):
            problems.append(f"{a} imports {b}: only the CLI may import the CLI")
    return sorted(set(problems))


def test_the_package_keeps_its_layers() -> None:
    assert layering_violations(SRC) == []


def test_the_runtime_sits_on_top_of_the_library() -> None:
    # runtime -> placement is the only direction between the two packages
    _, every = import_graph(SRC)
    into_library = [(a, b) for a, b in every.edges if unit_of(a) == "placement_runtime" and _in_library(unit_of(b))]
    assert into_library, "the runtime should use the library"
    assert [(a, b) for a, b in every.edges if _in_library(unit_of(a)) and unit_of(b) == "placement_runtime"] == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # the four cycles this test was written against, reduced to their shape
        ({"placement/__init__.py": "", "placement/milp/__init__.py": "",
          "placement/milp/_model.py": "def write():\n    from ..backends._highs import new\n",
          "placement/backends/__init__.py": "", "placement/backends/_highs.py": "from ..milp._model import M\n"},
         "package cycle: placement.backends -> placement.milp"),
        ({"placement/__init__.py": "", "placement/cli/__init__.py": "from ..plots import register\n",
          "placement/plots.py": "def cmd():\n    from .cli import _print\n"},
         "package cycle: placement.cli -> placement.plots"),
        ({"placement/__init__.py": "", "placement/methods.py": "from . import formulations\n",
          "placement/formulations/__init__.py": "from . import transmission\n",
          "placement/formulations/transmission.py": "from ..methods import register\n"},
         "import cycle at import time"),
        ({"placement/__init__.py": "", "placement/stats.py": "from .trace._trace import Trace\n",
          "placement/trace/__init__.py": "", "placement/trace/_trace.py": "def f():\n    from ..stats import load\n"},
         "package cycle: placement.stats -> placement.trace"),
        ({"placement/__init__.py": "", "placement/evaluate.py": "from .formulations import x\n",
          "placement/formulations/__init__.py": "x = 1\n"},
         "placement.evaluate imports placement.formulations"),
        ({"placement/__init__.py": "", "placement/evaluation/__init__.py": "",
          "placement/evaluation/flows.py": "def f():\n    from ..formulations import x\n",
          "placement/formulations/__init__.py": "x = 1\n"},
         "placement.evaluation.flows imports placement.formulations"),
        ({"placement/__init__.py": "", "placement/formulations/__init__.py": "import highspy\n"},
         "placement.formulations imports highspy"),
        ({"placement/__init__.py": "", "placement/api.py": "def f():\n    import torch\n"},
         "placement.api imports torch"),
        ({"placement/__init__.py": "", "placement/interop/__init__.py": "import torch\n"},
         "placement.interop imports torch at import time"),
        ({"placement/__init__.py": "", "placement/api.py": "def f():\n    import placement_runtime\n"},
         "placement.api imports placement_runtime"),
    ],
)
def test_the_checker_catches_each_kind_of_break(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = layering_violations(_write(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    files = {"placement/__init__.py": "", "placement/evaluate.py": "from typing import TYPE_CHECKING\n"
             "if TYPE_CHECKING:\n    from .formulations import x\n", "placement/formulations/__init__.py": ""}
    assert layering_violations(_write(tmp_path, files)) == []
