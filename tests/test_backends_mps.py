"""MPS export: :func:`placement.backends.write_mps`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from placement.backends import get_backend, write_mps
from placement.errors import PlacementInputError
from placement.milp import MilpBuilder, MilpModel, SolveParams


def test_write_mps_round_trip(tmp_path) -> None:
    highspy = pytest.importorskip("highspy")
    # max 10 y0 + 13 y1 + 7 y2 + 8 y3 + 5 s.t. 5 y0 + 6 y1 + 3 y2 + 4 y3 <= 10, y binary, plus a
    # continuous z in [0, 1.5] with cost 1 in a range row 1 <= y0 + z <= 2: optimum 21 + 5 + 1.5.
    b = MilpBuilder(sense="max")
    y = b.add_block("y", 4, "item", integer=True, upper=1, cost=[10, 13, 7, 8])
    z = b.add_block("z", 1, "aux", upper=1.5, cost=1)
    b.add_rows("weight", 1, np.zeros(4, int), y, [5, 6, 3, 4], upper=10)
    b.add_rows("range", 1, [0, 0], [y[0], z[0]], lower=1, upper=2)
    m = b.build(offset=5.0)
    path = tmp_path / "knapsack.mps"
    write_mps(m, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knapsack.mps"]  # no temporary left behind
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.readModel(str(path))
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    assert h.getInfo().objective_function_value == pytest.approx(27.5)
    r = get_backend("highs").solve(m, SolveParams(rel_gap=0))
    assert r.objective == pytest.approx(27.5)


def test_write_mps_into_missing_directory_fails_cleanly(tmp_path) -> None:
    pytest.importorskip("highspy")
    m = MilpModel(c=np.ones(2), A=sp.csc_matrix(np.ones((1, 2))), row_lower=np.ones(1), row_upper=np.ones(1),
                  col_lower=np.zeros(2), col_upper=np.ones(2), integrality=np.ones(2, bool))
    with pytest.raises(PlacementInputError, match="does not exist"):
        write_mps(m, tmp_path / "missing" / "model.mps")
