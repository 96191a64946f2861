"""The comparison notebook: stored without outputs, and runs top to bottom (nbclient) with no error and no
warning of any kind (every warning is shown, and any output on stderr fails the test)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "compare_placements.ipynb"

#: Prepended to the notebook when the test runs it (not stored): show every warning, including the
#: DeprecationWarnings Python hides outside ``__main__``; a shown warning goes to stderr.
SHOW_ALL_WARNINGS = "import warnings\nwarnings.simplefilter('always')"


def test_notebook_is_stored_without_outputs():
    """Outputs are produced by running it (docs/plots.md gives the command), never stored: a stored output
    would go stale with the code and the figures it was made from."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)


def test_notebook_executes_without_warnings():
    nbformat = pytest.importorskip("nbformat", reason="needs the notebook extra")
    nbclient = pytest.importorskip("nbclient", reason="needs the notebook extra")
    pytest.importorskip("matplotlib", reason="needs the notebook extra")
    pytest.importorskip("ipykernel", reason="needs the notebook extra")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(SHOW_ALL_WARNINGS))
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    elapsed = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    stderr = [o["text"] for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, stderr  # warnings (and anything else written to stderr)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # two step breakdowns, layer times, traffic, two expert maps
    assert elapsed < 120, f"notebook took {elapsed:.0f} s"
