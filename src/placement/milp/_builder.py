"""Build a :class:`~placement.milp.MilpModel` in bulk from named variable arrays and constraint families.

Formulations declare variable arrays (:meth:`MilpBuilder.add_block`) and whole families of rows
at once as COO triplets (:meth:`MilpBuilder.add_rows`) or as fixed-width sums
(:meth:`MilpBuilder.add_row_sums`). Nothing loops per variable or per row in Python: triplets are
kept as numpy arrays and assembled into one CSC matrix in :meth:`MilpBuilder.build`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import input_error
from ..progress import check_cancelled
from ._model import ColumnBlock, MilpModel, RowBlock

__all__ = ["MilpBuilder"]

_SOURCE = "MilpBuilder"


def _broadcast(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    try:
        return np.broadcast_to(arr, shape).reshape(-1)
    except ValueError:
        raise input_error(f"has shape {arr.shape}, which does not broadcast to {shape}",
                          source=_SOURCE, field=name) from None


class MilpBuilder:
    """Collects variable blocks and constraint families, then assembles a :class:`MilpModel` once.

    Parameters
    ----------
    sense:
        ``"min"`` or ``"max"``.
    name:
        Model name.

    Examples
    --------
    Assign 2 items to 3 bins at least cost, each bin holding at most one item:

    >>> import numpy as np
    >>> b = MilpBuilder()
    >>> x = b.add_block("x", (2, 3), ("item", "bin"), integer=True, upper=1,
    ...                 cost=[[4, 1, 3], [2, 0, 5]])
    >>> b.add_row_sums("assign", x, lower=1, upper=1)      # rows: sum over bins, per item
    range(0, 2)
    >>> b.add_row_sums("capacity", x.T, upper=1)           # rows: sum over items, per bin
    range(2, 5)
    >>> m = b.build()
    >>> m.num_vars, m.num_rows, m.nnz
    (6, 5, 12)
    """

    def __init__(self, sense: str = "min", name: str = "placement") -> None:
        self.sense = sense
        self.name = name
        self._n = 0
        self._m = 0
        self._blocks: list[ColumnBlock] = []
        self._row_blocks: list[RowBlock] = []
        self._cost: list[np.ndarray] = []
        self._lower: list[np.ndarray] = []
        self._upper: list[np.ndarray] = []
        self._integer: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._row_lower: list[np.ndarray] = []
        self._row_upper: list[np.ndarray] = []
        self._extra_cost: list[tuple[np.ndarray, np.ndarray]] = []
        self.offset = 0.0

    @property
    def num_vars(self) -> int:
        """Columns declared so far."""
        return self._n

    @property
    def num_rows(self) -> int:
        """Rows declared so far."""
        return self._m

    def add_block(self, name: str, shape: tuple[int, ...] | int, axes: tuple[str, ...] | str, *,
                  lower: Any = 0.0, upper: Any = np.inf, integer: bool | Any = False,
                  cost: Any = 0.0) -> np.ndarray:
        """Declare a named array of variables; return its column indices.

        Parameters
        ----------
        name:
            Block name, unique in the model.
        shape, axes:
            Shape of the array and one axis name per dimension.
        lower, upper, cost:
            Bounds and objective coefficients, scalars or arrays broadcastable to ``shape``.
        integer:
            True (all integer), False (all continuous) or a ``bool`` array broadcastable to ``shape``.

        Returns
        -------
        numpy.ndarray
            ``int64 [*shape]``: the column of each element, for use in :meth:`add_rows`.
        """
        check_cancelled()  # an abandoned build (progress.Run.bounded) stops here
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)  # type: ignore[arg-type]
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        if any(b.name == name for b in self._blocks):
            raise input_error(f"block {name!r} is already declared", source=_SOURCE, field="name")
        if len(axes) != len(shape):
            raise input_error(f"block {name!r} has shape {shape} but axes {axes}; give one name per "
                              f"dimension", source=_SOURCE, field="axes")
        block = ColumnBlock(name, self._n, shape, axes)
        self._lower.append(_broadcast(lower, shape, f"{name}.lower"))
        self._upper.append(_broadcast(upper, shape, f"{name}.upper"))
        self._cost.append(_broadcast(cost, shape, f"{name}.cost"))
        self._integer.append(np.broadcast_to(np.asarray(integer, dtype=np.bool_), shape).reshape(-1))
        self._blocks.append(block)
        self._n = block.stop
        return block.indices()

    def add_cost(self, cols: Any, values: Any) -> None:
        """Add ``values`` to the objective coefficients of ``cols`` (repeated columns accumulate)."""
        cols = np.asarray(cols, dtype=np.int64).reshape(-1)
        self._extra_cost.append((cols, _broadcast(values, cols.shape, "cost")))

    def add_rows(self, name: str, num_rows: int, row: Any, col: Any, coef: Any = 1.0, *,
                 lower: Any = -np.inf, upper: Any = np.inf) -> range:
        """Add a family of ``num_rows`` rows given as COO triplets.

        Parameters
        ----------
        name:
            Family name (shown in messages such as ``capacity[3]``).
        num_rows:
            Rows in the family.
        row:
            ``int [nnz]``, row within the family, in ``[0, num_rows)``.
        col:
            ``int [nnz]``, model column (from :meth:`add_block`).
        coef:
            ``float [nnz]`` or a scalar. Repeated ``(row, col)`` pairs are summed.
        lower, upper:
            Row bounds, scalars or ``float [num_rows]``.

        Returns
        -------
        range
            The model rows of this family.
        """
        check_cancelled()  # an abandoned build (progress.Run.bounded) stops here
        num_rows = int(num_rows)
        row = np.asarray(row, dtype=np.int64).reshape(-1)
        col = np.asarray(col, dtype=np.int64).reshape(-1)
        if row.shape != col.shape:
            raise input_error(f"family {name!r}: row has {row.size} entries but col has {col.size}",
                              source=_SOURCE, field="col")
        coef = _broadcast(coef, row.shape, f"{name}.coef")
        if row.size:
            if row.min() < 0 or row.max() >= num_rows:
                raise input_error(f"family {name!r}: row indices must lie in [0, {num_rows})",
                                  source=_SOURCE, field="row")
            if col.min() < 0 or col.max() >= self._n:
                raise input_error(f"family {name!r}: column indices must lie in [0, {self._n}); declare "
                                  f"the variables with add_block first", source=_SOURCE, field="col")
        start = self._m
        self._rows.append(row + start)
        self._cols.append(col)
        self._vals.append(coef)
        self._row_lower.append(_broadcast(lower, (num_rows,), f"{name}.lower"))
        self._row_upper.append(_broadcast(upper, (num_rows,), f"{name}.upper"))
        self._row_blocks.append(RowBlock(name, start, num_rows))
        self._m += num_rows
        return range(start, self._m)

    def add_row_sums(self, name: str, cols: Any, coef: Any = 1.0, *, lower: Any = -np.inf,
                     upper: Any = np.inf) -> range:
        """Add one row per index ``i``: ``lower[i] <= sum_k coef[i,k] * x[cols[i,k]] <= upper[i]``.

        ``cols`` is ``int [rows, ...]`` (trailing dimensions are flattened into the sum), for
        example ``x[l, e, :]`` for "expert ``e`` of layer ``l`` lives on one GPU" is
        ``x.reshape(L * E, G)``; ``coef`` broadcasts to ``cols.shape``.
        """
        check_cancelled()  # an abandoned build (progress.Run.bounded) stops here
        cols = np.asarray(cols, dtype=np.int64)
        if cols.ndim == 0:
            raise input_error(f"family {name!r}: cols must have at least one dimension",
                              source=_SOURCE, field="cols")
        k = cols.shape[0]
        width = int(np.prod(cols.shape[1:], dtype=np.int64))
        coef = _broadcast(coef, cols.shape, f"{name}.coef")
        row = np.repeat(np.arange(k, dtype=np.int64), width)
        return self.add_rows(name, k, row, cols.reshape(-1), coef, lower=lower, upper=upper)

    def build(self, offset: float | None = None) -> MilpModel:
        """Assemble the model: one COO -> CSC conversion, then :class:`MilpModel` validation."""
        check_cancelled()  # an abandoned build (progress.Run.bounded) stops here
        n, m = self._n, self._m

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        c = cat(self._cost, np.float64).copy()
        for cols, vals in self._extra_cost:
            np.add.at(c, cols, vals)
        rows = cat(self._rows, np.int64)
        cols = cat(self._cols, np.int64)
        vals = cat(self._vals, np.float64)
        # Index dtype int32 when it fits: halves memory and is what HiGHS wants.
        idx = np.int32 if max(n, m, rows.size) < 2**31 - 1 else np.int64
        A = sp.coo_matrix((vals, (rows.astype(idx), cols.astype(idx))), shape=(m, n)).tocsc()
        return MilpModel(
            c=c, A=A, row_lower=cat(self._row_lower, np.float64), row_upper=cat(self._row_upper, np.float64),
            col_lower=cat(self._lower, np.float64), col_upper=cat(self._upper, np.float64),
            integrality=cat(self._integer, np.bool_), sense=self.sense,
            offset=self.offset if offset is None else offset, blocks=tuple(self._blocks),
            row_blocks=tuple(self._row_blocks), name=self.name,
        )
