"""highspy and OR-Tools must load into one process in either order.

highspy 1.15 and ortools 9.15 bundle clashing HiGHS symbols; the pins in pyproject.toml keep a
compatible pair. Each order runs in a fresh interpreter and creates a solver object from each
library (HiGHS, CP-SAT, and a MathOpt solve), which is where a symbol clash shows up.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HIGHS = """
import highspy
h = highspy.Highs()
h.setOptionValue("output_flag", False)
assert h.getNumCol() == 0
"""
CPSAT = """
from ortools.sat.python import cp_model
m = cp_model.CpModel()
x = m.new_int_var(0, 3, "x")
m.maximize(x)
s = cp_model.CpSolver()
assert s.solve(m) == cp_model.OPTIMAL and s.value(x) == 3
"""
MATHOPT = """
from ortools.math_opt.python import mathopt
mm = mathopt.Model()
y = mm.add_binary_variable()
mm.maximize(y)
r = mathopt.solve(mm, mathopt.SolverType.HIGHS)
assert r.termination.reason == mathopt.TerminationReason.OPTIMAL
"""


@pytest.mark.parametrize("order", [(HIGHS, CPSAT, MATHOPT), (CPSAT, MATHOPT, HIGHS)],
                         ids=["highspy-first", "ortools-first"])
def test_highspy_and_ortools_share_a_process(order: tuple[str, ...]) -> None:
    code = "\n".join(order) + "\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
