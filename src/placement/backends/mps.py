"""Export a :class:`~placement.milp.MilpModel` as an MPS file, for external solvers and bug reports.

The model layer (:mod:`placement.milp`) holds arrays only and imports no solver; writing a file
format is a solver's job, so it lives here, beside the backends. HiGHS writes the file.

>>> from placement.backends import write_mps
>>> write_mps(model, "model.mps")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from .._io import atomic_path
from ..milp._model import MilpModel
from ._highs import load_into_highs, new_highs

__all__ = ["write_mps"]


def write_mps(model: MilpModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as a free-format MPS file, atomically (temporary file, then rename).

    HiGHS (imported on call) writes the file; column and row names are HiGHS's defaults
    (``c0``, ``r0``...), which :meth:`MilpModel.describe_column` and
    :meth:`MilpModel.describe_row` map back to the model's named blocks.

    Parameters
    ----------
    model:
        The model to write (``n`` columns, ``m`` rows).
    path:
        Target file; its directory must exist. An existing file is replaced only once the new
        one is complete.

    Raises
    ------
    PlacementInputError
        The directory of ``path`` does not exist, or HiGHS rejects the model.
    OSError
        HiGHS could not write the file.
    ModuleNotFoundError
        highspy is not installed (``pip install 'highspy>=1.11,<1.15'``).
    """
    h = new_highs()
    load_into_highs(h, model)
    with atomic_path(path, suffix=".mps") as tmp:
        status = h.writeModel(str(tmp))
        if str(status).rsplit(".", 1)[-1] not in ("kOk", "kWarning"):
            raise OSError(f"HiGHS could not write MPS file {path} (status {status})")
