"""pytest hooks for the package's doctests: examples that need a missing extra skip with the reason.

The doctests run with ``--doctest-modules`` (``pyproject.toml``).  A module whose examples need an
optional dependency is listed in :data:`NEEDS`; when a listed package is not installed its
doctests skip through :func:`pytest.importorskip` (as ``tests/`` do), so the suite passes with any
subset of the extras and the report says what was skipped and why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: module file (relative to this directory) -> (optional packages its doctests import, the extra)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "plots.py": (("matplotlib",), "notebook"),
}


@pytest.fixture(autouse=True)
def _doctest_extras(request: pytest.FixtureRequest) -> None:
    path = Path(request.node.path).resolve()
    if path.parent != HERE or path.name not in NEEDS:
        return
    packages, extra = NEEDS[path.name]
    for package in packages:
        pytest.importorskip(package, reason=f"the doctests of {path.name} need {package} (the {extra} extra)")

#: ``data/samples`` links to the repository's ``data/traces`` (sample files and the script that writes them):
#: not a module of the package, so no doctests are collected there.
collect_ignore = ["data/samples"]
