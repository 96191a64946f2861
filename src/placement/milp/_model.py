"""The neutral mixed-integer linear model that every formulation builds and every backend solves.

A :class:`MilpModel` is arrays only::

    min/max  c @ x + offset
    s.t.     row_lower <= A @ x <= row_upper
             col_lower <=     x <= col_upper
             x[j] integer where integrality[j]

Named :class:`ColumnBlock` s map contiguous column ranges back to the arrays the formulation
declared (``x[layer, expert, gpu]``...), and :class:`RowBlock` s name the constraint families.
All checks live in :func:`_validate_model`; its messages are part of the tested contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import input_error

__all__ = ["ColumnBlock", "MilpModel", "RowBlock"]

_SOURCE = "MilpModel"


@dataclass(frozen=True)
class ColumnBlock:
    """A contiguous range of columns that holds one named array of variables.

    Parameters
    ----------
    name:
        Array name, unique within the model (``"x"``).
    start:
        First column of the block.
    shape:
        Shape of the array (``(layers, experts, gpus)``); the block spans ``prod(shape)`` columns
        in C (row-major) order.
    axes:
        One name per dimension (``("layer", "expert", "gpu")``).
    """

    name: str
    start: int
    shape: tuple[int, ...]
    axes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", int(self.start))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "axes", tuple(str(a) for a in self.axes))

    @property
    def size(self) -> int:
        """Number of columns in the block."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def stop(self) -> int:
        """One past the last column of the block."""
        return self.start + self.size

    def indices(self) -> np.ndarray:
        """Column index of every element: ``int64 [*shape]``."""
        return np.arange(self.start, self.stop, dtype=np.int64).reshape(self.shape)


@dataclass(frozen=True)
class RowBlock:
    """A contiguous range of rows that holds one named family of constraints.

    Parameters
    ----------
    name:
        Family name (``"assign"``, ``"capacity"``).
    start:
        First row of the family.
    size:
        Number of rows.
    """

    name: str
    start: int
    size: int

    @property
    def stop(self) -> int:
        """One past the last row of the family."""
        return self.start + self.size


@dataclass(frozen=True, eq=False)
class MilpModel:
    """A mixed-integer linear program held as arrays.

    Parameters
    ----------
    c:
        Objective coefficients, ``float64 [n]``; finite.
    A:
        Constraint matrix, ``scipy.sparse.csc_matrix float64 [m, n]``; stored canonical
        (sorted indices, duplicates summed, explicit zeros removed).
    row_lower, row_upper:
        Row bounds, ``float64 [m]``; ``-inf`` / ``+inf`` for a missing side.
    col_lower, col_upper:
        Column bounds, ``float64 [n]``; ``-inf`` / ``+inf`` allowed.
    integrality:
        ``bool [n]``: true where the column must take an integer value.
    sense:
        ``"min"`` or ``"max"``.
    offset:
        Constant added to the objective.
    blocks:
        Named column blocks; they must not overlap and must lie inside ``[0, n)``.
        Columns outside every block are allowed (auxiliary variables).
    row_blocks:
        Named row families; same rules on ``[0, m)``.
    name:
        Free-form model name used in logs and files.

    Arrays are copied to the stated dtypes and made read-only. Any inconsistency raises
    :class:`~placement.errors.PlacementInputError` naming the field.

    Examples
    --------
    Two items, two bins, each item in exactly one bin, bin 0 holds at most one item:

    >>> import numpy as np, scipy.sparse as sp
    >>> from placement.milp import ColumnBlock, MilpModel
    >>> A = sp.csc_matrix(np.array([[1., 1, 0, 0],    # item 0 in one bin
    ...                             [0, 0, 1, 1],     # item 1 in one bin
    ...                             [1, 0, 1, 0]]))   # bin 0 capacity
    >>> m = MilpModel(c=np.array([1., 3, 2, 5]), A=A,
    ...               row_lower=np.array([1., 1, -np.inf]), row_upper=np.array([1., 1, 1]),
    ...               col_lower=np.zeros(4), col_upper=np.ones(4), integrality=np.ones(4, bool),
    ...               blocks=(ColumnBlock("x", 0, (2, 2), ("item", "bin")),))
    >>> m.num_vars, m.num_rows, m.nnz
    (4, 3, 6)
    >>> m.block_values(np.array([1., 0, 0, 1]), "x")
    array([[1., 0.],
           [0., 1.]])
    >>> m.describe_column(2)
    'x[item=1, bin=0]'
    """

    c: np.ndarray
    A: sp.csc_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray
    sense: str = "min"
    offset: float = 0.0
    blocks: tuple[ColumnBlock, ...] = ()
    row_blocks: tuple[RowBlock, ...] = ()
    name: str = "placement"
    _block_index: dict[str, ColumnBlock] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key, value in _validate_model(
            c=self.c, A=self.A, row_lower=self.row_lower, row_upper=self.row_upper,
            col_lower=self.col_lower, col_upper=self.col_upper, integrality=self.integrality,
            sense=self.sense, offset=self.offset, blocks=self.blocks, row_blocks=self.row_blocks,
        ).items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_block_index", {b.name: b for b in self.blocks})

    # ------------------------------------------------------------------ sizes
    @property
    def num_vars(self) -> int:
        """Number of columns ``n``."""
        return int(self.c.shape[0])

    @property
    def num_rows(self) -> int:
        """Number of rows ``m``."""
        return int(self.A.shape[0])

    @property
    def nnz(self) -> int:
        """Number of stored nonzeros of ``A``."""
        return int(self.A.nnz)

    @property
    def is_mip(self) -> bool:
        """True when at least one column is integer."""
        return bool(self.integrality.any())

    def __repr__(self) -> str:
        kind = "MILP" if self.is_mip else "LP"
        return (f"MilpModel({self.name!r}, {kind}, {self.sense}, vars={self.num_vars}, "
                f"integer={int(self.integrality.sum())}, rows={self.num_rows}, nnz={self.nnz}, "
                f"blocks={[b.name for b in self.blocks]})")

    # ------------------------------------------------------------------ blocks
    def block(self, name: str) -> ColumnBlock:
        """The column block called ``name``; raises naming the known blocks if absent."""
        try:
            return self._block_index[name]
        except KeyError:
            known = ", ".join(repr(k) for k in self._block_index) or "none"
            raise input_error(f"no column block named {name!r}; known blocks: {known}",
                              source=_SOURCE, field="blocks") from None

    def block_values(self, solution: np.ndarray, name: str) -> np.ndarray:
        """Slice ``solution`` (``float64 [n]``) to block ``name``, reshaped to the block's shape."""
        sol = np.asarray(solution)
        if sol.shape != (self.num_vars,):
            raise input_error(f"solution has shape {sol.shape}, expected ({self.num_vars},)",
                              source=_SOURCE, field="solution")
        b = self.block(name)
        return sol[b.start:b.stop].reshape(b.shape)

    def describe_column(self, j: int) -> str:
        """Human-readable name of column ``j``: ``"x[layer=0, expert=3, gpu=1]"`` or ``"column 17"``."""
        j = int(j)
        for b in self.blocks:
            if b.start <= j < b.stop:
                idx = np.unravel_index(j - b.start, b.shape) if b.shape else ()
                inner = ", ".join(f"{a}={int(i)}" for a, i in zip(b.axes, idx, strict=True))
                return f"{b.name}[{inner}]"
        return f"column {j}"

    def describe_row(self, i: int) -> str:
        """Human-readable name of row ``i``: ``"capacity[3]"`` or ``"row 17"``."""
        i = int(i)
        for b in self.row_blocks:
            if b.start <= i < b.stop:
                return f"{b.name}[{i - b.start}]"
        return f"row {i}"

    # ------------------------------------------------------------------ evaluation
    def objective_value(self, x: np.ndarray) -> float:
        """``c @ x + offset`` for ``x: float64 [n]``."""
        return float(self.c @ np.asarray(x, dtype=np.float64) + self.offset)

    def max_violation(self, x: np.ndarray) -> float:
        """Largest violation of any row bound, column bound or integrality by ``x: float64 [n]``."""
        x = np.asarray(x, dtype=np.float64)
        ax = self.A @ x
        viol = [0.0]
        if ax.size:
            viol.append(float(np.max(np.maximum(self.row_lower - ax, ax - self.row_upper))))
        if x.size:
            viol.append(float(np.max(np.maximum(self.col_lower - x, x - self.col_upper))))
            xi = x[self.integrality]
            if xi.size:
                viol.append(float(np.max(np.abs(xi - np.round(xi)))))
        return max(viol)


def _as_vector(value: Any, name: str, n: int | None) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim != 1:
        raise input_error(f"must be a 1-D array, got shape {arr.shape}", source=_SOURCE, field=name)
    if n is not None and arr.shape[0] != n:
        raise input_error(f"has {arr.shape[0]} entries, expected {n}", source=_SOURCE, field=name)
    if np.isnan(arr).any():
        raise input_error(f"contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}",
                          source=_SOURCE, field=name)
    return arr


def _check_bounds(lo: np.ndarray, hi: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = int(bad[0])
        raise input_error(f"{what}_lower > {what}_upper at index {i} ({lo[i]} > {hi[i]}); "
                          f"swap or widen the bounds", source=_SOURCE, field=f"{what}_lower")
    bad = np.flatnonzero(lo == np.inf)
    if bad.size:
        raise input_error(f"is +inf at index {int(bad[0])}; a lower bound must be finite or -inf",
                          source=_SOURCE, field=f"{what}_lower")
    bad = np.flatnonzero(hi == -np.inf)
    if bad.size:
        raise input_error(f"is -inf at index {int(bad[0])}; an upper bound must be finite or +inf",
                          source=_SOURCE, field=f"{what}_upper")


def _check_ranges(blocks: tuple[Any, ...], limit: int, field_name: str, unit: str) -> None:
    names = [b.name for b in blocks]
    dup = {x for x in names if names.count(x) > 1}
    if dup:
        raise input_error(f"duplicate block name {sorted(dup)[0]!r}; block names must be unique",
                          source=_SOURCE, field=field_name)
    spans = sorted((b.start, b.stop, b.name) for b in blocks)
    for start, stop, name in spans:
        if start < 0 or stop > limit:
            raise input_error(f"block {name!r} spans {unit}s [{start}, {stop}) but the model has {limit} "
                              f"{unit}s", source=_SOURCE, field=field_name)
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:], strict=False):  # pairs of neighbours
        if s1 < e0:
            raise input_error(f"block {n1!r} ({unit}s [{s1}, {e1})) overlaps block {n0!r} "
                              f"({unit}s [{s0}, {e0}))", source=_SOURCE, field=field_name)


def _validate_model(*, c: Any, A: Any, row_lower: Any, row_upper: Any, col_lower: Any, col_upper: Any,
                    integrality: Any, sense: Any, offset: Any, blocks: Any,
                    row_blocks: Any) -> dict[str, Any]:
    """Check and normalise every field of a :class:`MilpModel`; return the normalised values.

    The one place where model input is validated. Arrays come back as fresh read-only
    ``float64`` (``bool`` for ``integrality``) vectors and ``A`` as a canonical ``csc_matrix``.
    """
    if sense not in ("min", "max"):
        raise input_error(f"must be 'min' or 'max', got {sense!r}", source=_SOURCE, field="sense")
    try:
        offset = float(offset)
    except (TypeError, ValueError):
        raise input_error(f"must be a number, got {offset!r}", source=_SOURCE, field="offset") from None
    if not np.isfinite(offset):
        raise input_error(f"must be finite, got {offset}", source=_SOURCE, field="offset")

    c = _as_vector(c, "c", None)
    n = c.shape[0]
    if not np.isfinite(c).all():
        raise input_error(f"contains a non-finite cost at index {int(np.flatnonzero(~np.isfinite(c))[0])}",
                          source=_SOURCE, field="c")
    if not sp.issparse(A):
        if isinstance(A, np.ndarray) and A.ndim == 2:
            A = sp.csc_matrix(A)
        else:
            raise input_error(f"must be a scipy.sparse matrix or a 2-D array, got {type(A).__name__}",
                              source=_SOURCE, field="A")
    A = sp.csc_matrix(A, dtype=np.float64, copy=True)
    if A.shape[1] != n:
        raise input_error(f"has {A.shape[1]} columns but c has {n} entries", source=_SOURCE, field="A")
    if not np.isfinite(A.data).all():
        raise input_error("contains a NaN or infinite coefficient", source=_SOURCE, field="A")
    A.sum_duplicates()
    A.eliminate_zeros()
    A.sort_indices()
    m = A.shape[0]

    row_lower = _as_vector(row_lower, "row_lower", m)
    row_upper = _as_vector(row_upper, "row_upper", m)
    col_lower = _as_vector(col_lower, "col_lower", n)
    col_upper = _as_vector(col_upper, "col_upper", n)
    _check_bounds(row_lower, row_upper, "row")
    _check_bounds(col_lower, col_upper, "col")

    integ = np.asarray(integrality)
    if integ.shape != (n,):
        raise input_error(f"has shape {integ.shape}, expected ({n},)", source=_SOURCE, field="integrality")
    if integ.dtype != np.bool_:
        if not np.isin(integ, (0, 1)).all():
            raise input_error("must hold booleans (or 0/1)", source=_SOURCE, field="integrality")
    integ = integ.astype(np.bool_, copy=True)

    blocks = tuple(blocks)
    row_blocks = tuple(row_blocks)
    for b in blocks:
        if not isinstance(b, ColumnBlock):
            raise input_error(f"must hold ColumnBlock values, got {type(b).__name__}",
                              source=_SOURCE, field="blocks")
        if len(b.axes) != len(b.shape):
            raise input_error(f"block {b.name!r} has shape {b.shape} but {len(b.axes)} axis names "
                              f"{b.axes}; give one name per dimension", source=_SOURCE, field="blocks")
        if any(s < 0 for s in b.shape):
            raise input_error(f"block {b.name!r} has a negative dimension in shape {b.shape}",
                              source=_SOURCE, field="blocks")
    for rb in row_blocks:
        if not isinstance(rb, RowBlock):
            raise input_error(f"must hold RowBlock values, got {type(rb).__name__}",
                              source=_SOURCE, field="row_blocks")
    _check_ranges(blocks, n, "blocks", "column")
    _check_ranges(row_blocks, m, "row_blocks", "row")

    for arr in (c, row_lower, row_upper, col_lower, col_upper, integ):
        arr.setflags(write=False)
    return {"c": c, "A": A, "row_lower": row_lower, "row_upper": row_upper, "col_lower": col_lower,
            "col_upper": col_upper, "integrality": integ, "sense": sense, "offset": offset,
            "blocks": blocks, "row_blocks": row_blocks}
