"""The bundled sample traces, reachable from any working directory.

The samples are the small synthetic traces of ``data/traces/`` (one per model preset of
:mod:`placement.trace.synthesize`, plus the same routing in the ExFlow ``.npy`` and long CSV
formats) and, in its sub-folder ``domains/``, real per-domain expert load counts of OLMoE and
Mixtral-8x7B (count traces named ``domains/<model>-<domain>``, from the allenai/OLMoE repository,
Apache-2.0); ``data/traces/README.md`` says how each was made.  A wheel ships them as package data
(``placement/data/samples/``, which in the source tree is a link to ``data/traces/``); an editable
install or a checkout without the link finds them at the repository root.  :func:`samples` lists
them, :func:`path` gives a sample's file and :func:`trace` loads it.

>>> from placement import data
>>> "deepseek-v3" in data.samples()
True
>>> t = data.trace("mixtral-8x7b")
>>> t.num_layers, t.num_experts, t.top_k
(32, 8, 2)
>>> data.path("mixtral-8x7b-top1").suffix
'.npy'
>>> real = data.trace("domains/olmoe-arxiv")
>>> real.kind, real.num_layers, real.model.moe_layers, real.metadata["domain"]
('counts', 3, (0, 7, 15), 'arxiv')
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import input_error

if TYPE_CHECKING:  # pragma: no cover
    from ..trace import Trace

__all__ = ["samples", "path", "trace", "sample_dir"]

#: File suffixes of the sample traces (the formats :func:`placement.trace.load_trace` reads).
SAMPLE_SUFFIXES = (".npz", ".npy", ".csv")

_HERE = Path(__file__).resolve().parent


def _candidates() -> list[Path]:
    """Folders that may hold the samples, first match wins: the package's own copy (a wheel), then the
    repository's ``data/traces`` (an editable install or a source checkout: ``src/placement/data`` is
    three levels below the root)."""
    return [_HERE / "samples", _HERE.parents[2] / "data" / "traces"]


def sample_dir() -> Path:
    """The folder holding the sample traces (raises the input error when no install carries them)."""
    for folder in _candidates():
        if folder.is_dir() and any(p.suffix in SAMPLE_SUFFIXES for p in folder.iterdir()):
            return folder
    raise input_error("the bundled sample traces are not installed with this copy of placement; reinstall it "
                      "from a wheel or a source checkout (they live in data/traces/)", field="placement.data")


def samples() -> dict[str, Path]:
    """Every sample: name -> file, sorted by name.  The name is the file's stem (``"deepseek-v3"``),
    prefixed by its sub-folder for the samples one folder down (``"domains/olmoe-arxiv"``)."""
    folder = sample_dir()
    files = [p for p in folder.iterdir() if p.suffix in SAMPLE_SUFFIXES and p.is_file()]
    files += [p for sub in folder.iterdir() if sub.is_dir() and not sub.name.startswith((".", "_"))
              for p in sub.iterdir() if p.suffix in SAMPLE_SUFFIXES and p.is_file()]
    found = {p.relative_to(folder).with_suffix("").as_posix(): p for p in files}
    return dict(sorted(found.items()))


def path(name: str) -> Path:
    """The file of sample ``name`` (its name in :func:`samples`, with or without the file's suffix)."""
    if not isinstance(name, str):
        raise input_error(f"must be a sample name (a string), got {type(name).__name__}", field="name")
    known = samples()
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in SAMPLE_SUFFIXES else name
    if stem not in known:
        raise input_error(f"no bundled sample {name!r}; choose one of {list(known)}", field="name")
    return known[stem]


def trace(name: str) -> Trace:
    """The sample trace ``name`` loaded (:func:`placement.trace.load_trace`)."""
    from ..trace import load_trace

    return load_trace(path(name))
