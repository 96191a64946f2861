"""The comparison notebook runs top to bottom (nbclient) in under two minutes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "compare_placements.ipynb"


def test_notebook_executes():
    nbformat = pytest.importorskip("nbformat", reason="needs the notebook extra")
    nbclient = pytest.importorskip("nbclient", reason="needs the notebook extra")
    pytest.importorskip("matplotlib", reason="needs the notebook extra")
    pytest.importorskip("ipykernel", reason="needs the notebook extra")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    elapsed = time.perf_counter() - t0
    assert elapsed < 120, f"notebook took {elapsed:.0f} s"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # expert map, two traffic matrices, tier bars
