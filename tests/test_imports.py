"""`import placement` stays light: no torch, no solver, no pandas."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "highspy", "ortools", "pandas", "placement_runtime")


def _loaded_after(code: str) -> list[str]:
    probe = (f"{code}\nimport sys\n"
             f"print('LOADED=' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("LOADED=")]
    assert line, out.stdout + out.stderr
    return [m for m in line[-1].removeprefix("LOADED=").split(",") if m]


def test_import_placement_is_light():
    assert _loaded_after("import placement") == []


def test_version_command_is_light():
    code = "import placement.cli as c\ntry:\n    c.main(['--version'])\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []


def test_method_registry_imports_no_solver():
    assert _loaded_after("import placement\nprint(list(placement.METHODS))") == []


def test_formulations_never_import_a_solver():
    # Formulations build MilpModels (or flow networks) and reach solvers only through placement.backends.
    import re
    from pathlib import Path

    import placement.formulations as f

    pattern = re.compile(r"^\s*(import|from)\s+(highspy|ortools|pyscipopt|gurobipy)\b", re.M)
    offenders = [p.name for p in Path(f.__file__).parent.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_placement_never_imports_the_runtime_or_torch():
    import re
    from pathlib import Path

    import placement

    pattern = re.compile(r"^\s*(import|from)\s+(torch|placement_runtime)\b", re.M)
    root = Path(placement.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    # the interop module writes .pt files with torch imported lazily inside functions; nothing else may
    assert all(o.startswith("interop") for o in offenders), offenders
