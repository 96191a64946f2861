"""MilpModel validation (messages are part of the contract), blocks and the bulk builder (MPS output:
tests/test_backends_mps.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from placement.errors import PlacementInputError
from placement.milp import ColumnBlock, MilpBuilder, MilpModel, RowBlock, relative_gap


def fields(**over):
    # min x0 + 2 x1 + 3 x2  s.t.  x0 + x1 + x2 = 1 ; x binary.
    base = dict(c=np.array([1.0, 2, 3]), A=sp.csc_matrix(np.ones((1, 3))), row_lower=np.ones(1),
                row_upper=np.ones(1), col_lower=np.zeros(3), col_upper=np.ones(3),
                integrality=np.ones(3, bool))
    base.update(over)
    return base


def test_valid_model_is_normalised_and_read_only() -> None:
    m = MilpModel(**fields(integrality=np.array([1, 1, 0]), A=np.ones((1, 3))))
    assert m.integrality.dtype == np.bool_ and m.integrality.tolist() == [True, True, False]
    assert isinstance(m.A, sp.csc_matrix) and m.A.dtype == np.float64
    assert (m.num_vars, m.num_rows, m.nnz, m.is_mip) == (3, 1, 3, True)
    with pytest.raises(ValueError, match="read-only"):
        m.c[0] = 5.0
    assert "MilpModel('placement', MILP, min, vars=3, integer=2, rows=1, nnz=3" in repr(m)


def test_duplicates_are_summed_and_zeros_dropped() -> None:
    A = sp.coo_matrix(([1.0, 2.0, 0.0], ([0, 0, 0], [1, 1, 2])), shape=(1, 3))
    m = MilpModel(**fields(A=A))
    assert m.nnz == 1 and m.A[0, 1] == 3.0


@pytest.mark.parametrize(("over", "message"), [
    ({"sense": "minimise"}, "field 'sense': must be 'min' or 'max', got 'minimise'"),
    ({"offset": float("nan")}, "field 'offset': must be finite"),
    ({"c": np.ones((3, 1))}, r"field 'c': must be a 1-D array, got shape \(3, 1\)"),
    ({"c": np.array([1.0, np.nan, 0])}, "field 'c': contains NaN at index 1"),
    ({"c": np.array([1.0, np.inf, 0])}, "field 'c': contains a non-finite cost at index 1"),
    ({"A": sp.csc_matrix(np.ones((1, 4)))}, "field 'A': has 4 columns but c has 3 entries"),
    ({"A": sp.csc_matrix(np.array([[1.0, np.nan, 1]]))}, "field 'A': contains a NaN or infinite coefficient"),
    ({"A": [[1, 1, 1]]}, "field 'A': must be a scipy.sparse matrix or a 2-D array, got list"),
    ({"row_lower": np.ones(2)}, "field 'row_lower': has 2 entries, expected 1"),
    ({"row_lower": np.array([2.0])}, r"field 'row_lower': row_lower > row_upper at index 0 \(2.0 > 1.0\)"),
    ({"col_upper": np.array([1.0, -1, 1])}, r"col_lower > col_upper at index 1 \(0.0 > -1.0\)"),
    ({"col_lower": np.array([0, np.inf, 0]), "col_upper": np.full(3, np.inf)},
     "field 'col_lower': is \\+inf at index 1; a lower bound must be finite or -inf"),
    ({"row_lower": np.array([-np.inf]), "row_upper": np.array([-np.inf])},
     "field 'row_upper': is -inf at index 0; an upper bound must be finite or \\+inf"),
    ({"integrality": np.ones(2, bool)}, r"field 'integrality': has shape \(2,\), expected \(3,\)"),
    ({"integrality": np.array([0, 2, 1])}, "field 'integrality': must hold booleans"),
    ({"blocks": (ColumnBlock("x", 0, (2, 2), ("a", "b")),)},
     r"field 'blocks': block 'x' spans columns \[0, 4\) but the model has 3 columns"),
    ({"blocks": (ColumnBlock("x", 0, (2,), ("a",)), ColumnBlock("y", 1, (2,), ("a",)))},
     r"block 'y' \(columns \[1, 3\)\) overlaps block 'x' \(columns \[0, 2\)\)"),
    ({"blocks": (ColumnBlock("x", 0, (1,), ("a",)), ColumnBlock("x", 1, (1,), ("a",)))},
     "duplicate block name 'x'"),
    ({"blocks": (ColumnBlock("x", 0, (3,), ("a", "b")),)},
     r"block 'x' has shape \(3,\) but 2 axis names \('a', 'b'\); give one name per dimension"),
    ({"row_blocks": (RowBlock("r", 0, 2),)}, r"field 'row_blocks': block 'r' spans rows \[0, 2\)"),
])
def test_validation_messages(over: dict, message: str) -> None:
    with pytest.raises(PlacementInputError, match=message) as info:
        MilpModel(**fields(**over))
    assert str(info.value).startswith("MilpModel: field '")


def test_blocks_map_back_to_named_arrays() -> None:
    b = MilpBuilder()
    x = b.add_block("x", (2, 3, 4), ("layer", "expert", "gpu"), integer=True, upper=1)
    z = b.add_block("z", 2, "layer", cost=1)
    m = b.build()
    assert x.shape == (2, 3, 4) and x[1, 2, 3] == 23 and z.tolist() == [24, 25]
    sol = np.arange(26, dtype=float)
    np.testing.assert_array_equal(m.block_values(sol, "x"), sol[:24].reshape(2, 3, 4))
    assert m.block_values(sol, "z").tolist() == [24.0, 25.0]
    assert m.describe_column(int(x[1, 0, 2])) == "x[layer=1, expert=0, gpu=2]"
    assert m.describe_column(25) == "z[layer=1]"
    assert m.block("x").indices()[1, 2, 3] == 23
    with pytest.raises(ValueError, match="no column block named 'w'; known blocks: 'x', 'z'"):
        m.block_values(sol, "w")
    with pytest.raises(ValueError, match=r"solution has shape \(3,\), expected \(26,\)"):
        m.block_values(np.zeros(3), "x")


def test_builder_assembles_rows_in_bulk() -> None:
    # 2 layers x 3 experts x 2 GPUs: each (layer, expert) on one GPU; each GPU at most 3 experts.
    L, E, G = 2, 3, 2
    b = MilpBuilder(name="toy")
    x = b.add_block("x", (L, E, G), ("layer", "expert", "gpu"), integer=True, upper=1,
                    cost=np.arange(L * E * G).reshape(L, E, G))
    assign = b.add_row_sums("assign", x.reshape(L * E, G), lower=1, upper=1)
    cap = b.add_row_sums("capacity", x.transpose(2, 0, 1), upper=3)
    b.add_cost(x[0, 0, 0], 100.0)
    b.add_cost([x[0, 0, 0], x[0, 0, 0]], 1.0)  # repeated columns accumulate
    m = b.build(offset=2.5)
    assert assign == range(0, 6) and cap == range(6, 8)
    assert [(rb.name, rb.start, rb.size) for rb in m.row_blocks] == [("assign", 0, 6), ("capacity", 6, 2)]
    assert m.describe_row(7) == "capacity[1]"
    assert m.nnz == 2 * L * E * G and m.offset == 2.5 and m.c[0] == 102.0
    dense = m.A.toarray()
    np.testing.assert_array_equal(dense[:6].sum(axis=1), np.full(6, 2))
    assert dense[6].reshape(L, E, G)[:, :, 0].all() and not dense[6].reshape(L, E, G)[:, :, 1].any()
    assert m.row_upper[6:].tolist() == [3.0, 3.0] and np.isneginf(m.row_lower[6:]).all()


@pytest.mark.parametrize(("call", "message"), [
    (lambda b, x: b.add_rows("r", 1, [0], [99]), r"family 'r': column indices must lie in \[0, 4\)"),
    (lambda b, x: b.add_rows("r", 1, [1], [0]), r"family 'r': row indices must lie in \[0, 1\)"),
    (lambda b, x: b.add_rows("r", 1, [0, 0], [0]), "family 'r': row has 2 entries but col has 1"),
    (lambda b, x: b.add_block("x", 2, "i"), "block 'x' is already declared"),
    (lambda b, x: b.add_block("y", (2, 2), "i"), "block 'y' has shape"),
    (lambda b, x: b.add_block("y", 2, "i", cost=[1, 2, 3]), r"field 'y.cost': has shape \(3,\)"),
    (lambda b, x: b.add_row_sums("r", x, upper=[1, 2, 3]), r"field 'r.upper': has shape \(3,\)"),
])
def test_builder_errors(call, message: str) -> None:
    b = MilpBuilder()
    x = b.add_block("x", (2, 2), ("i", "j"))
    with pytest.raises(PlacementInputError, match=message):
        call(b, x)


def test_max_violation_and_objective() -> None:
    m = MilpModel(**fields(offset=1.0))
    assert m.objective_value(np.array([0.0, 1, 0])) == 3.0
    assert m.max_violation(np.array([0.0, 1, 0])) == 0.0
    assert m.max_violation(np.array([0.5, 0.5, 0])) == pytest.approx(0.5)  # integrality
    assert m.max_violation(np.array([1.0, 1, 0])) == pytest.approx(1.0)  # row
    assert relative_gap(2.0, 1.0) == 0.5


def test_milp_imports_nothing_from_backends() -> None:
    # The dependency runs one way: backends import the model, the model never imports a backend.
    import ast
    from pathlib import Path

    import placement.milp

    offenders = []
    for path in Path(placement.milp.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith(("..backends", "placement.backends", "highspy", "ortools"))]
    assert offenders == []
