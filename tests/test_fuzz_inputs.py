"""Bad input of every kind the CLI reads is refused cleanly (issue 16).

Families: trace files (``.npz``, ExFlow ``.npy``, ``.csv``, ``.parquet``), topology YAML and preset
specs, placement JSON/YAML, interop imports, and command-line options.  Every case runs the CLI and
asserts: exit status 2, one line on stderr starting ``placement: error:``, no traceback, the file or
field named, nothing written, and an output file that existed before left byte for byte as it was.

Most cases call :func:`placement.cli.main` in-process (fast); a few run the installed script to see
the real exit status.  Hand-written corrupt files come first, then hypothesis mutations of valid
files (bounded example counts, no deadline, so the module stays around a minute on 2 shared cores).
The number of distinct bad inputs tried is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from placement.cli import main  # noqa: E402

SEEN: set[str] = set()
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _report_count(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    line = f"\ntest_fuzz_inputs: {len(SEEN)} distinct bad inputs refused cleanly"
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(line)
    else:  # pragma: no cover
        print(line)


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``placement argv`` in-process: (exit status, stdout, stderr); a traceback is status -1."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback is what the test reports
            import traceback

            return -1, out.getvalue(), err.getvalue() + traceback.format_exc()
    return rc, out.getvalue(), err.getvalue()


def _fingerprint(argv: list[str], files: list[Path]) -> str:
    h = hashlib.sha1(repr([str(a) for a in argv]).encode())
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def refused(argv: list[str], names: tuple[str, ...], inputs: tuple[Path, ...] = (), outputs: tuple[Path, ...] = ()):
    """Run ``argv`` and assert a clean refusal naming one of ``names``; ``outputs`` must be untouched."""
    before = {o: (o.read_bytes() if o.is_file() else None) for o in outputs}
    dirs = {o.parent for o in outputs if o.parent.is_dir()}
    listing = {d: sorted(os.listdir(d)) for d in dirs}
    SEEN.add(_fingerprint(argv, list(inputs)))
    rc, stdout, stderr = cli(argv)
    assert rc == 2, f"exit {rc} for {argv}: {stderr}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("placement: error: "), repr(stderr)
    assert any(n in lines[0] for n in names), f"none of {names} in {lines[0]!r}"
    assert "allow_pickle" not in lines[0] and "weights_only=False" not in lines[0], lines[0]
    if os.environ.get("FUZZ_SHOW"):  # print every message, to read them
        print(lines[0])
    for o, data in before.items():
        now = o.read_bytes() if o.is_file() else None
        assert now == data, f"{o} changed"
    for d, names_before in listing.items():
        assert sorted(os.listdir(d)) == names_before, f"files appeared in {d}"
    return lines[0]


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Valid inputs: a token trace, a count trace, a topology YAML, a placement JSON, an old output."""
    from placement import Placement
    from placement.trace import ModelSpec, Trace, save_trace

    d = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    spec = ModelSpec("tiny", num_layers=2, num_experts=8, top_k=2)
    ex = np.argsort(rng.random((40, 2, 8)), axis=2)[:, :, :2]
    trace = Trace.from_tokens(spec, ex, weights=rng.random((40, 2, 2)), origin=rng.integers(0, 4, 40), num_ranks=4)
    save_trace(trace, d / "t.npz")
    save_trace(trace, d / "t.csv")
    counts = Trace.from_counts(spec, rng.integers(0, 9, (2, 8)))
    save_trace(counts, d / "c.npz")
    (d / "topo.yaml").write_text(
        "name: two\n"
        "nodes:\n"
        "  - {id: a, kind: gpu, server: s0}\n"
        "  - {id: b, kind: gpu, server: s0}\n"
        "  - {id: sw, kind: nvswitch, server: s0}\n"
        "links:\n"
        "  - {a: a, b: sw, tier: nvlink, bandwidth_GBps: 450}\n"
        "  - {a: b, b: sw, tier: nvlink, bandwidth_GBps: 450}\n")
    Placement.from_assignment(np.tile(np.arange(8) % 4, (2, 1)), num_gpus=4).save(d / "p.json")
    (d / "old.json").write_text('{"old": true}\n')
    return d


def mutated(tmp: Path, name: str, data: bytes | str) -> Path:
    p = tmp / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def npz(tmp: Path, name: str = "bad.npz", **arrays) -> Path:
    p = tmp / name
    with open(p, "wb") as f:
        np.savez(f, **arrays)
    return p


MODEL = json.dumps({"num_layers": 2, "num_experts": 8, "top_k": 2})
HEADER = {"format": np.array("placement-trace"), "version": np.array(1), "model": np.array(MODEL)}
EX = np.tile(np.array([[0, 1], [2, 3]]), (5, 1, 1))  # [5 tokens, 2 layers, 2]


def _npy_with_header(p: Path, shape: tuple[int, ...], dtype: str = "<i8") -> Path:
    """An .npy file whose header declares ``shape`` but holds only a few bytes of data."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    with open(p, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))
        f.write(b"\x00" * 64)
    return p


# ------------------------------------------------------------------------------------------- traces
def trace_cases(tmp: Path, good: Path) -> list[tuple[str, Path, tuple[str, ...]]]:
    """(case id, bad trace file, names one of which the message must contain)."""
    cases: list[tuple[str, Path, tuple[str, ...]]] = []

    def add(cid, path, *names):
        cases.append((cid, path, names or (path.name,)))

    add("npz-random-bytes", mutated(tmp, "rb.npz", os.urandom(200)))
    add("npz-empty-file", mutated(tmp, "empty.npz", b""))
    raw = (good / "t.npz").read_bytes()
    add("npz-truncated", mutated(tmp, "trunc.npz", raw[: len(raw) // 2]))
    corrupt = bytearray(raw)
    for i in range(len(corrupt) // 3, len(corrupt) // 3 + 40):
        corrupt[i] ^= 0xFF
    add("npz-corrupt-member", mutated(tmp, "corrupt.npz", bytes(corrupt)))
    # a zip whose member is not an .npy
    zp = tmp / "notnpy.npz"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("format.npy", b"hello")
        z.writestr("experts.npy", b"\x93NUMPY garbage")
    add("npz-member-not-npy", zp)
    add("npz-no-format", npz(tmp, "nofmt.npz", experts=EX))
    add("npz-format-int", npz(tmp, "fmtint.npz", **{**HEADER, "format": np.array(3)}, experts=EX), "format")
    add("npz-format-array", npz(tmp, "fmtarr.npz", **{**HEADER, "format": np.array(["placement-trace"] * 2)},
                                experts=EX), "format")
    for cid, v in (("str", np.array("1")), ("float", np.array(1.5)), ("bool", np.array(True)),
                   ("vector", np.array([1, 1])), ("huge", np.array(2**62))):
        add(f"npz-version-{cid}", npz(tmp, f"ver{cid}.npz", **{**HEADER, "version": v}, experts=EX), "version")
    bad_models = {
        "not-json": "{num_layers: 2", "list": "[2, 8, 2]", "frac": '{"num_layers": 2, "num_experts": 8.5, "top_k": 2}',
        "whole-float": '{"num_layers": 2.0, "num_experts": 8, "top_k": 2}',
        "string": '{"num_layers": "2", "num_experts": 8, "top_k": 2}',
        "bool": '{"num_layers": 2, "num_experts": 8, "top_k": true}',
        "huge": '{"num_layers": 2, "num_experts": 100000000000000000000, "top_k": 2}',
        "inf": '{"num_layers": 2, "num_experts": Infinity, "top_k": 2}',
        "negative": '{"num_layers": -2, "num_experts": 8, "top_k": 2}',
        "groups-bool": '{"num_layers": 2, "num_experts": 8, "top_k": 2, "num_groups": true}',
        "groups-float": '{"num_layers": 2, "num_experts": 8, "top_k": 2, "num_groups": 2.0}',
        "topk-groups-str": '{"num_layers": 2, "num_experts": 8, "top_k": 2, "num_groups": 2, "topk_groups": "1"}',
        "name-list": '{"name": [1], "num_layers": 2, "num_experts": 8, "top_k": 2}',
        "dtype-int": '{"num_layers": 2, "num_experts": 8, "top_k": 2, "weight_dtype": 4}',
        "dup-key": '{"num_layers": 2, "num_layers": 3, "num_experts": 8, "top_k": 2}',
        "model-array": None,
    }
    for cid, text in bad_models.items():
        model = np.array([MODEL, MODEL]) if text is None else np.array(text)
        add(f"npz-model-{cid}", npz(tmp, f"model-{cid}.npz", **{**HEADER, "model": model}, experts=EX), "model")
    add("npz-model-bytes", npz(tmp, "model-bytes.npz", **{**HEADER, "model": np.frombuffer(b"\xff\xfe{", np.uint8)},
                               experts=EX), "model")
    add("npz-metadata-not-json", npz(tmp, "meta.npz", **HEADER, metadata=np.array("{oops"), experts=EX), "metadata")
    add("npz-metadata-list", npz(tmp, "meta2.npz", **HEADER, metadata=np.array("[1, 2]"), experts=EX), "metadata")
    add("npz-metadata-int", npz(tmp, "meta3.npz", **HEADER, metadata=np.array(5), experts=EX), "metadata")
    add("npz-experts-object", npz(tmp, "obj.npz", **HEADER, experts=np.array([[[0, 1]], [[1, 2]]], dtype=object)),
        "experts")
    add("npz-experts-str", npz(tmp, "str.npz", **HEADER, experts=EX.astype(str)), "experts")
    add("npz-experts-bool", npz(tmp, "bool.npz", **HEADER, experts=EX.astype(bool)), "experts")
    add("npz-experts-float", npz(tmp, "float.npz", **HEADER, experts=EX + 0.5), "experts")
    add("npz-experts-2d", npz(tmp, "twod.npz", **HEADER, experts=EX[:, :, 0]), "experts")
    add("npz-experts-empty", npz(tmp, "e0.npz", **HEADER, experts=EX[:0]), "experts")
    add("npz-experts-huge-id", npz(tmp, "hid.npz", **HEADER, experts=EX + 2**40), "experts")
    add("npz-experts-negative", npz(tmp, "neg.npz", **HEADER, experts=EX - 3), "experts")
    add("npz-both", npz(tmp, "both.npz", **HEADER, experts=EX, counts=np.ones((2, 8), dtype=np.int64)), "counts")
    add("npz-neither", npz(tmp, "neither.npz", **HEADER), "experts")
    add("npz-weights-str", npz(tmp, "wstr.npz", **HEADER, experts=EX, weights=EX.astype(str)), "weights")
    add("npz-weights-shape", npz(tmp, "wshape.npz", **HEADER, experts=EX, weights=np.ones(3)), "weights")
    add("npz-weights-nan", npz(tmp, "wnan.npz", **HEADER, experts=EX, weights=np.full(EX.shape, np.nan)), "weights")
    add("npz-origin-float", npz(tmp, "of.npz", **HEADER, experts=EX, origin=np.zeros(5) + 0.5), "origin")
    add("npz-origin-str", npz(tmp, "os.npz", **HEADER, experts=EX, origin=np.array(["a"] * 5)), "origin")
    add("npz-num-ranks-str", npz(tmp, "nrs.npz", **HEADER, experts=EX, origin=np.zeros(5, int),
                                 num_ranks=np.array("four")), "num_ranks")
    add("npz-num-ranks-float", npz(tmp, "nrf.npz", **HEADER, experts=EX, origin=np.zeros(5, int),
                                   num_ranks=np.array(2.5)), "num_ranks")
    add("npz-num-ranks-zero", npz(tmp, "nr0.npz", **HEADER, experts=EX, origin=np.zeros(5, int),
                                  num_ranks=np.array(0)), "num_ranks")
    add("npz-num-ranks-vector", npz(tmp, "nrv.npz", **HEADER, experts=EX, origin=np.zeros(5, int),
                                    num_ranks=np.array([4, 4])), "num_ranks")
    add("npz-num-ranks-no-origin", npz(tmp, "nrno.npz", **HEADER, experts=EX, num_ranks=np.array(4)), "num_ranks")
    add("npz-counts-negative", npz(tmp, "cneg.npz", **HEADER, counts=-np.ones((2, 8), dtype=np.int64)), "counts")
    add("npz-counts-frac", npz(tmp, "cfrac.npz", **HEADER, counts=np.full((2, 8), 0.5)), "counts")
    add("npz-counts-str", npz(tmp, "cstr.npz", **HEADER, counts=np.full((2, 8), "1")), "counts")
    add("npz-counts-bool", npz(tmp, "cbool.npz", **HEADER, counts=np.ones((2, 8), dtype=bool)), "counts")
    add("npz-counts-overflow", npz(tmp, "cover.npz", **HEADER, counts=np.full((2, 8), 2**62)), "counts")
    add("npz-counts-inf", npz(tmp, "cinf.npz", **HEADER, counts=np.full((2, 8), np.inf)), "counts")
    add("npz-counts-4d", npz(tmp, "c4d.npz", **HEADER, counts=np.ones((1, 1, 2, 8), dtype=np.int64)), "counts")
    add("npz-unknown-member", npz(tmp, "unk.npz", **HEADER, experts=EX, extra=np.ones(2)), "extra")
    huge_model = json.dumps({"num_layers": 4000, "num_experts": 60000, "top_k": 1})
    hp = tmp / "hugeshape.npz"
    with zipfile.ZipFile(hp, "w") as z:
        for k, v in HEADER.items():
            buf = io.BytesIO()
            np.save(buf, v if k != "model" else np.array(huge_model))
            z.writestr(f"{k}.npy", buf.getvalue())
        z.write(_npy_with_header(tmp / "hdr.npy", (10**9, 4000, 1), "<i4"), "experts.npy")
    add("npz-declared-shape-huge", hp, "experts")
    zp = tmp / "hugeheader.npz"
    with zipfile.ZipFile(zp, "w") as z:
        for k, v in HEADER.items():
            buf = io.BytesIO()
            np.save(buf, v)
            z.writestr(f"{k}.npy", buf.getvalue())
        z.write(_npy_with_header(tmp / "hdr2.npy", (5, 2, 2), "<i8"), "experts.npy")
    add("npz-short-member", zp, "experts")

    # ExFlow .npy
    def npy(name, arr):
        p = tmp / name
        with open(p, "wb") as f:
            np.save(f, arr, allow_pickle=True)
        return p

    add("npy-1d", npy("one.npy", np.arange(4)), "experts")
    add("npy-3d", npy("three.npy", EX), "experts")
    add("npy-empty-axis", npy("e1.npy", np.zeros((5, 0), dtype=np.int64)), "experts")
    add("npy-empty-rows", npy("e0.npy", np.zeros((0, 3), dtype=np.int64)), "experts")
    add("npy-object", npy("obj.npy", np.array([[1, "a"]], dtype=object)), "obj.npy")
    add("npy-str", npy("str.npy", np.array([["1", "2"]])), "experts")
    add("npy-bool", npy("bool.npy", np.ones((3, 2), dtype=bool)), "experts")
    add("npy-negative", npy("neg.npy", -np.ones((3, 2), dtype=np.int64)), "experts")
    add("npy-huge-id", npy("hid.npy", np.full((3, 2), 2**40)), "experts")
    add("npy-frac", npy("frac.npy", np.full((3, 2), 1.5)), "experts")
    add("npy-nan", npy("nan.npy", np.full((3, 2), np.nan)), "experts")
    add("npy-complex", npy("cplx.npy", np.ones((3, 2), dtype=complex)), "experts")
    add("npy-archive", mutated(tmp, "archive.npy", raw), "archive.npy")
    add("npy-random", mutated(tmp, "r.npy", os.urandom(100)), "r.npy")
    add("npy-declared-huge", _npy_with_header(tmp / "declared.npy", (10**12, 60)), "declared.npy", "experts")
    add("npy-declared-short", _npy_with_header(tmp / "short.npy", (50, 60)), "short.npy")
    add("npy-declared-negative", _npy_with_header(tmp / "negshape.npy", (-5, 2)), "negshape.npy")

    # long format
    head = "token,layer,rank_in_topk,expert"
    add("csv-empty", mutated(tmp, "empty.csv", b""))
    add("csv-header-only", mutated(tmp, "hdr.csv", head + "\n"))
    add("csv-missing-column", mutated(tmp, "miss.csv", "token,layer,expert\n0,0,1\n"), "rank_in_topk")
    add("csv-text-expert", mutated(tmp, "txt.csv", f"{head}\n0,0,0,x\n"), "expert")
    add("csv-frac-expert", mutated(tmp, "frac.csv", f"{head}\n0,0,0,1.5\n"), "expert")
    add("csv-bool-expert", mutated(tmp, "boolx.csv", f"{head}\n0,0,0,True\n"), "expert")
    add("csv-nan-expert", mutated(tmp, "nan.csv", f"{head}\n0,0,0,\n"), "expert")
    add("csv-negative", mutated(tmp, "neg.csv", f"{head}\n0,0,0,-1\n"), "expert")
    add("csv-huge-layer", mutated(tmp, "hl.csv", f"{head}\n0,1000000000000,0,1\n"), "layer")
    add("csv-huge-rank", mutated(tmp, "hr.csv", f"{head}\n0,0,99999999999,1\n"), "rank_in_topk")
    add("csv-huge-expert", mutated(tmp, "hx.csv", f"{head}\n0,0,0,99999999999999999999999\n"), "expert")
    add("csv-huge-token", mutated(tmp, "ht.csv", f"{head}\n99999999999999999999999,0,0,1\n"), "token")
    add("csv-weight-text", mutated(tmp, "wt.csv", f"{head},weight\n0,0,0,1,abc\n"), "weight")
    add("csv-weight-inf", mutated(tmp, "wi.csv", f"{head},weight\n0,0,0,1,inf\n"), "weight")
    add("csv-origin-text", mutated(tmp, "ot.csv", f"{head},origin\n0,0,0,1,a\n"), "origin")
    add("csv-origin-negative", mutated(tmp, "on.csv", f"{head},origin\n0,0,0,1,-3\n"), "origin")
    add("csv-origin-frac", mutated(tmp, "of.csv", f"{head},origin\n0,0,0,1,0.5\n"), "origin")
    add("csv-duplicate", mutated(tmp, "dup.csv", f"{head}\n0,0,0,1\n0,0,0,1\n"), "rank_in_topk")
    add("csv-not-utf8", mutated(tmp, "latin.csv", (head + "\n0,0,0,1\n").encode() + b"\xff\xfe\n"))
    add("csv-binary", mutated(tmp, "bin.csv", os.urandom(300)))
    add("csv-dup-column", mutated(tmp, "dupcol.csv", f"{head},expert\n0,0,0,1,2\n"), "expert")
    add("parquet-random", mutated(tmp, "r.parquet", os.urandom(300)))
    add("parquet-csv-bytes", mutated(tmp, "c.parquet", (good / "t.csv").read_bytes()))
    add("unknown-suffix", mutated(tmp, "t.txt", b"hello"), "t.txt")
    add("no-suffix", mutated(tmp, "trace", b"hello"), "trace")
    (tmp / "dir.npz").mkdir(exist_ok=True)
    add("directory", tmp / "dir.npz", "is a directory")
    add("missing", tmp / "nope.npz", "not found")
    return cases


def test_bad_trace_files(tmp_path, good):
    """Every corrupt trace is refused by ``trace info`` and by ``solve --out`` (old output untouched)."""
    failures = []
    cases = trace_cases(tmp_path, good)
    for i, (cid, path, names) in enumerate(cases):
        try:
            refused(["trace", "info", path], names, inputs=(path,))
            if i % 4 == 0:  # a share of them through solve with an existing output, which must stay as it was
                out = tmp_path / "out.json"
                shutil.copy(good / "old.json", out)
                refused(["solve", "--trace", path, "--topology", "fat-tree:2x2", "--out", out], names,
                        inputs=(path,), outputs=(out,))
        except AssertionError as exc:
            failures.append(f"{cid}: {exc}")
    assert not failures, "\n".join(failures)
    assert len(cases) >= 90


# ----------------------------------------------------------------------------------------- topologies
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
NODES = ("nodes:\n  - {id: a, kind: gpu, server: s0}\n  - {id: b, kind: gpu, server: s0}\n"
         "  - {id: sw, kind: nvswitch, server: s0}\n")
LINKS = ("links:\n  - {a: a, b: sw, tier: nvlink, bandwidth_GBps: 450}\n"
         "  - {a: b, b: sw, tier: nvlink, bandwidth_GBps: 450}\n")


def topology_cases(tmp: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(case id, --topology value, names one of which the message must contain)."""
    files = {
        "bomb": BOMB + NODES + LINKS,
        "dup-top-key": "name: x\nname: y\n" + NODES + LINKS,
        "dup-node-key": NODES.replace("kind: gpu, server: s0}", "kind: gpu, kind: nic, server: s0}", 1) + LINKS,
        "kind-GPU": NODES.replace("kind: gpu", "kind: GPU") + LINKS,
        "kind-list": NODES.replace("kind: gpu", "kind: [gpu]", 1) + LINKS,
        "not-utf8": None,
        "tabs": "name: x\n\tnodes: []\n",
        "top-list": "- a\n- b\n",
        "top-scalar": "42\n",
        "empty": "",
        "bw-bool": NODES + LINKS.replace("450", "true", 1),
        "bw-negative": NODES + LINKS.replace("450", "-1", 1),
        "bw-inf": NODES + LINKS.replace("450", ".inf", 1),
        "bw-text": NODES + LINKS.replace("450", "fast", 1),
        "latency-negative": NODES + LINKS.replace("450}", "450, latency_us: -3}", 1),
        "unknown-node": NODES + LINKS.replace("a: a,", "a: zz,", 1),
        "self-loop": NODES + LINKS.replace("b: sw", "b: a", 1),
        "dup-link": NODES + LINKS + "  - {a: a, b: sw, tier: nvlink, bandwidth_GBps: 450}\n",
        "no-gpu": NODES.replace("kind: gpu", "kind: nic") + LINKS,
        "gpu-no-server": NODES.replace(", server: s0}", "}", 1) + LINKS,
        "unknown-key": "colour: red\n" + NODES + LINKS,
        "preset-int": "preset: 42\n",
        "preset-huge": "preset: 'fat-tree:100000x8'\n",
        "preset-and-nodes": "preset: dgx-h100\n" + NODES,
        "gpu-model": "gpu: h9000\n" + NODES + LINKS,
        "disconnected": NODES + "links:\n  - {a: a, b: sw, tier: nvlink, bandwidth_GBps: 450}\n",
        "deep": "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "huge-int": "name: 1" + "0" * 5000 + "\n" + NODES + LINKS,
    }
    out = []
    for cid, text in files.items():
        p = tmp / f"topo-{cid}.yaml"
        p.write_bytes(b"name: \xff\xfe\n" if text is None else text.encode())
        out.append((cid, str(p), (p.name,)))
    (tmp / "topodir.yaml").mkdir(exist_ok=True)
    out += [("directory", str(tmp / "topodir.yaml"), ("is a directory",)),
            ("missing-file", str(tmp / "nope.yaml"), ("not found",)),
            ("empty-spec", "", ("topology",)),
            ("blank-spec", "   ", ("topology",)),
            ("unknown-preset", "fat-free:2x4", ("fat-free",)),
            ("preset-huge", "fat-tree:100000x8", ("max_gpus",)),
            ("preset-huge-gpus", "dgx-h100:1x99999999", ("max_gpus",)),
            ("preset-huge-digits", "fat-tree:servers=" + "9" * 40, ("servers",)),
            ("preset-negative", "fat-tree:servers=-2", ("servers",)),
            ("preset-float-count", "fat-tree:servers=2.5", ("servers",)),
            ("preset-bool", "fat-tree:servers=true", ("servers",)),
            ("preset-nan-bw", "fat-tree:2x4,nic_GBps=nan", ("nic_GBps",)),
            ("preset-inf-bw", "fat-tree:2x4,nic_GBps=inf", ("nic_GBps",)),
            ("preset-zero-bw", "rail:2x4,nvlink_GBps=0", ("nvlink_GBps",)),
            ("preset-dup-key", "fat-tree:servers=2,servers=3", ("servers",)),
            ("preset-unknown-key", "fat-tree:colour=2", ("colour",)),
            ("preset-gpu", "fat-tree:2x4,gpu=h9000", ("h9000",)),
            ("preset-garbage", "dragonfly:::", ("dragonfly",)),
            ("preset-dgx-servers", "dgx-h100:4x8", ("servers",))]
    return out


def test_bad_topologies(tmp_path, good):
    failures = []
    cases = topology_cases(tmp_path)
    for i, (cid, spec, names) in enumerate(cases):
        try:
            refused(["topology", "show", spec], names)
            if i % 3 == 0:
                out = tmp_path / "out.json"
                shutil.copy(good / "old.json", out)
                refused(["solve", "--trace", good / "t.npz", "--topology", spec, "--out", out], names, outputs=(out,))
        except AssertionError as exc:
            failures.append(f"{cid}: {exc}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------------------- placements
def placement_cases(tmp: Path) -> list[tuple[str, Path, tuple[str, ...]]]:
    base = {"schema": "placement/1", "num_layers": 2, "num_experts": 8, "num_gpus": 4, "slots_per_gpu": 2,
            "slots": [[[0, 4], [1, 5], [2, 6], [3, 7]], [[0, 4], [1, 5], [2, 6], [3, 7]]]}

    def with_(**kw):
        return {**base, **kw}

    def slot(v):
        s = json.loads(json.dumps(base["slots"]))
        s[1][2][1] = v
        return with_(slots=s)

    docs: dict[str, object] = {
        "slot-fraction": slot(6.5), "slot-whole-float": slot(6.0), "slot-string": slot("6"), "slot-bool": slot(True),
        "slot-null": slot(None), "slot-huge": slot(10**30), "slot-wrap": slot(2**32 + 6), "slot-list": slot([6]),
        "slot-out-of-range": slot(8), "slot-negative": slot(-2),
        "experts-fraction": with_(num_experts=8.5), "experts-whole-float": with_(num_experts=8.0),
        "experts-string": with_(num_experts="8"), "experts-bool": with_(num_experts=True),
        "experts-null": with_(num_experts=None), "experts-huge": with_(num_experts=10**20),
        "experts-zero": with_(num_experts=0), "gpus-float": with_(num_gpus=4.0), "gpus-wrong": with_(num_gpus=5),
        "layers-bool": with_(num_layers=True), "ragged": with_(slots=[[[0, 4], [1]], [[0]]]),
        "slots-2d": with_(slots=[[0, 1, 2, 3, 4, 5, 6, 7]]), "slots-empty": with_(slots=[]),
        "slots-dict": with_(slots={"0": 1}), "schema-wrong": with_(schema="placement/2"),
        "schema-missing": {k: v for k, v in base.items() if k != "schema"},
        "no-slots": {k: v for k, v in base.items() if k != "slots"},
        "metadata-list": with_(metadata=[1]), "top-list": [1, 2], "top-string": "placement",
        "routing-bool": with_(routing=True), "routing-text": with_(routing=[[["a"]]]),
        "missing-expert": with_(slots=[[[0, 4], [1, 5], [2, 6], [3, -1]], [[0, 4], [1, 5], [2, 6], [3, 7]]]),
    }
    out = []
    for cid, doc in docs.items():
        p = tmp / f"p-{cid}.json"
        p.write_text(json.dumps(doc))
        out.append((cid, p, (p.name,)))
    texts = {
        "p-dup.json": '{"schema": "placement/1", "num_experts": 8, "num_experts": 9, "slots": [[[0]]]}',
        "p-nan.json": '{"schema": "placement/1", "num_experts": NaN, "slots": [[[0]]]}',
        "p-inf.json": '{"schema": "placement/1", "num_experts": Infinity, "slots": [[[0]]]}',
        "p-digits.json": '{"schema": "placement/1", "num_experts": 1' + "0" * 5000 + ', "slots": [[[0]]]}',
        "p-deep.json": "[" * 100000 + "]" * 100000,
        "p-trunc.json": '{"schema": "placement/1", "num_ex',
        "p-empty.json": "",
        "p-dup.yaml": "schema: placement/1\nnum_experts: 2\nnum_experts: 3\nslots: [[[0, 1]]]\n",
        "p-bomb.yaml": BOMB + "schema: placement/1\nnum_experts: 1\nslots: [[[0]]]\n",
        "p-bad.yaml": "schema: placement/1\nslots: [[[0, 1]]\n",
        "p-float.yaml": "schema: placement/1\nnum_experts: 2.0\nslots: [[[0, 1]]]\n",
        "p-yes.yaml": "schema: placement/1\nnum_experts: 2\nslots: [[[0, yes]]]\n",
    }
    for name, text in texts.items():
        p = tmp / name
        p.write_text(text)
        out.append((name, p, (name,)))
    for name, data in (("p-latin1.json", b'{"schema": "placement/1", "x": "\xe9"}'),
                       ("p-latin1.yaml", b"schema: placement/1\nx: \xe9\n"), ("p-bin.json", os.urandom(64))):
        p = tmp / name
        p.write_bytes(data)
        out.append((name, p, (name,)))
    (tmp / "pdir.json").mkdir(exist_ok=True)
    out.append(("directory", tmp / "pdir.json", ("is a directory",)))
    out.append(("missing", tmp / "none.json", ("not found",)))
    out.append(("suffix", mutated(tmp, "p.txt", "{}"), ("p.txt",)))
    return out


def test_bad_placements(tmp_path, good):
    failures = []
    for cid, path, names in placement_cases(tmp_path):
        try:
            refused(["evaluate", "--placement", path, "--trace", good / "t.npz", "--topology", "fat-tree:2x2"], names,
                    inputs=(path,))
            out = tmp_path / "out.json"
            shutil.copy(good / "old.json", out)
            refused(["export", "--placement", path, "--format", "eplb-json", "--out", out], names, inputs=(path,),
                    outputs=(out,))
        except AssertionError as exc:
            failures.append(f"{cid}: {exc}")
    assert not failures, "\n".join(failures)


# -------------------------------------------------------------------------------------------- options
def option_cases(good: Path, tmp: Path) -> list[tuple[str, list, tuple[str, ...]]]:
    t, topo = good / "t.npz", "fat-tree:2x2"
    solve = ["solve", "--trace", t, "--topology", topo]
    cmp = ["compare", "--trace", t, "--topology", topo, "--methods", "contiguous,random"]
    (tmp / "a-file").write_text("x")
    cases = [
        ("seed-negative", [*solve, "--method", "random", "--option", "seed=-1"], ("seed",)),
        ("seed-float", [*solve, "--method", "random", "--option", "seed=1.5"], ("seed",)),
        ("seed-whole-float", [*solve, "--method", "random", "--option", "seed=2.0"], ("seed",)),
        ("seed-bool", [*solve, "--method", "random", "--option", "seed=true"], ("seed",)),
        ("seed-huge", [*solve, "--method", "random", "--option", "seed=" + "9" * 5000], ("seed",)),
        ("redundant-negative", [*solve, "--method", "eplb", "--option", "redundant=-2"], ("redundant",)),
        ("layer-time-redundant", [*solve, "--method", "layer-time", "--option", "redundant=-7"], ("redundant",)),
        ("local-time-negative", [*solve, "--method", "exflow", "--option", "local_time=-0.5"], ("local_time",)),
        ("eps-negative", [*solve, "--method", "moetuner-joint", "--option", "eps=-3"], ("eps",)),
        ("backend-unused", [*solve, "--method", "transmission", "--option", "backend=cpsat"], ("backend",)),
        ("backend-empty-unused", [*solve, "--method", "transmission", "--option", "backend="], ("backend",)),
        ("backend-unused-alltoall", [*solve, "--method", "alltoall-time", "--option", "solver=heuristic",
                                     "--option", "backend=highs"], ("backend",)),
        ("threads-unused-dp", [*solve, "--method", "exflow", "--option", "strategy=dp", "--option", "threads=2"],
         ("threads",)),
        ("backend-unknown", [*solve, "--method", "transmission", "--option", "solver=milp", "--option",
                             "backend=nosuch"], ("backend", "nosuch")),
        ("time-limit-nan", [*solve, "--method", "transmission", "--option", "time_limit=nan"], ("time_limit",)),
        ("time-limit-inf", [*solve, "--method", "transmission", "--option", "time_limit=inf"], ("time_limit",)),
        ("time-limit-negative", [*solve, "--method", "transmission", "--option", "time_limit=-1"], ("time_limit",)),
        ("experts-per-gpu-negative", [*solve, "--method", "transmission", "--option", "experts_per_gpu=-1"],
         ("experts_per_gpu",)),
        ("threads-negative", [*solve, "--method", "moetuner", "--option", "threads=-4"], ("threads",)),
        ("bool-maybe", [*solve, "--method", "eplb", "--option", "faithful=maybe"], ("faithful",)),
        ("choice", [*solve, "--method", "transmission", "--option", "solver=magic"], ("solver",)),
        ("unknown-option", [*solve, "--method", "random", "--option", "sead=1"], ("sead",)),
        ("no-equals", [*solve, "--method", "random", "--option", "seed"], ("--option",)),
        ("empty-key", [*solve, "--method", "random", "--option", "=3"], ("--option",)),
        ("option-for-optionless", [*solve, "--method", "contiguous", "--option", "seed=1"], ("seed",)),
        ("compare-uncompared", [*cmp, "--option", "eplb.redundant=3"], ("eplb", "--option")),
        ("compare-misspelt", [*cmp, "--option", "randon.seed=3"], ("randon",)),
        ("compare-no-dot", [*cmp, "--option", "seed=3"], ("--option",)),
        ("compare-bad-value", [*cmp, "--option", "random.seed=-3"], ("seed",)),
        ("compare-inline-bad", ["compare", "--trace", t, "--topology", topo, "--methods", "random(seed=-1)"],
         ("seed",)),
        ("compare-inline-unknown", ["compare", "--trace", t, "--topology", topo, "--methods", "random(x=1)"],
         ("x",)),
        ("compare-empty-methods", ["compare", "--trace", t, "--topology", topo, "--methods", ","], ("--methods",)),
        ("compare-bad-reference", [*cmp, "--reference", "nosuch"], ("nosuch",)),
        ("empty-topology", ["solve", "--trace", t, "--topology", ""], ("--topology",)),
        ("empty-trace", ["solve", "--trace", "", "--topology", topo], ("--trace",)),
        ("trace-is-dir", ["solve", "--trace", tmp, "--topology", topo], ("is a directory",)),
        ("trace-under-file", ["solve", "--trace", tmp / "a-file" / "t.npz", "--topology", topo], ("a-file",)),
        ("out-is-dir", [*solve, "--out", tmp], ("is a directory",)),
        ("out-missing-dir", [*solve, "--out", tmp / "nodir" / "p.json"], ("does not exist",)),
        ("out-under-file", [*solve, "--out", tmp / "a-file" / "p.json"], ("a-file",)),
        ("out-empty", [*solve, "--out", ""], ("--out",)),
        ("out-suffix", [*solve, "--out", tmp / "p.txt"], ("p.txt",)),
        ("compare-out-dir", [*cmp, "--out", tmp / "nodir" / "c.csv"], ("does not exist",)),
        ("synth-out-dir", ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "10", "--out",
                           tmp / "nodir" / "t.npz"], ("does not exist",)),
        ("synth-tokens-huge", ["trace", "synth", "--model", "deepseek-v3", "--tokens", "10000000000000", "--out",
                               tmp / "t.npz"], ("tokens",)),
        ("synth-tokens-zero", ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "0", "--out", tmp / "t.npz"],
         ("tokens",)),
        ("synth-ranks-negative", ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "10", "--ranks", "-3",
                                  "--out", tmp / "t.npz"], ("ranks",)),
        ("synth-ranks-huge", ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "10", "--ranks",
                              "1000000000000", "--out", tmp / "t.npz"], ("ranks",)),
        ("synth-skew-nan", ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "10", "--skew", "nan",
                            "--out", tmp / "t.npz"], ("skew",)),
        ("synth-affinity", ["trace", "synth", "--model", "mixtral-8x7b", "--tokens", "10", "--affinity", "2",
                            "--out", tmp / "t.npz"], ("affinity",)),
        ("hidden-size-negative", ["evaluate", "--placement", good / "p.json", "--trace", t, "--topology", topo,
                                  "--hidden-size", "-5"], ("hidden",)),
        ("tokens-per-gpu-zero", ["evaluate", "--placement", good / "p.json", "--trace", t, "--topology", topo,
                                 "--tokens-per-gpu", "0"], ("tokens",)),
        ("tokens-per-step-huge", ["evaluate", "--placement", good / "p.json", "--trace", t, "--topology", topo,
                                  "--tokens-per-step", "-100"], ("tokens",)),
        ("evaluate-gpus-mismatch", ["evaluate", "--placement", good / "p.json", "--trace", t, "--topology",
                                    "fat-tree:2x4"], ("GPU", "gpu")),
        ("evaluate-reference-missing", ["evaluate", "--placement", good / "p.json", "--trace", t, "--topology", topo,
                                        "--reference", tmp / "none.json"], ("none.json",)),
        ("export-first-moe-negative", ["export", "--placement", good / "p.json", "--format", "sglang-json", "--out",
                                       tmp / "s.json", "--first-moe-layer", "-3"], ("first", "moe")),
        ("export-suffix", ["export", "--placement", good / "p.json", "--format", "eplb-json", "--out",
                           tmp / "e.yaml"], ("e.yaml", "--out")),
        ("plot-layer", ["plot", "map", "--placement", good / "p.json", "--layer", "99", "--out", tmp / "m.png"],
         ("layer",)),
        ("plot-table-missing", ["plot", "tiers", "--table", tmp / "none.csv", "--out", tmp / "m.png"],
         ("none.csv",)),
    ]
    return cases


def test_bad_options(tmp_path, good):
    failures = []
    for cid, argv, names in option_cases(good, tmp_path):
        out = tmp_path / "old.json"
        shutil.copy(good / "old.json", out)
        try:
            refused(argv, names, outputs=(out,))
        except AssertionError as exc:
            failures.append(f"{cid}: {exc}")
    assert not failures, "\n".join(failures)


# -------------------------------------------------------------------------------------------- interop
def interop_cases(tmp: Path) -> list[tuple[str, list, tuple[str, ...]]]:
    """(case id, ``import`` arguments before --out, names one of which the message must contain)."""
    def f(name, data):
        return mutated(tmp, name, data if isinstance(data, (bytes, str)) else json.dumps(data))

    ok = {"phy2log": [[0, 1, 2, 3]], "num_gpus": 2}
    cases = [
        ("eplb-bool-id", f("e-bool.json", {**ok, "phy2log": [[0, True, 2, 3]]}), "eplb-json", ("phy2log",)),
        ("eplb-frac-id", f("e-frac.json", {**ok, "phy2log": [[0, 1.5, 2, 3]]}), "eplb-json", ("phy2log",)),
        ("eplb-str-id", f("e-str.json", {**ok, "phy2log": [[0, "1", 2, 3]]}), "eplb-json", ("phy2log",)),
        ("eplb-null-id", f("e-null.json", {**ok, "phy2log": [[0, None, 2, 3]]}), "eplb-json", ("phy2log",)),
        ("eplb-huge-id", f("e-huge.json", {**ok, "phy2log": [[0, 10**40, 2, 3]]}), "eplb-json", ("phy2log",)),
        ("eplb-ragged", f("e-ragged.json", {**ok, "phy2log": [[0, 1], [2]]}), "eplb-json", ("phy2log",)),
        ("eplb-gpus-bool", f("e-gb.json", {**ok, "num_gpus": True}), "eplb-json", ("num_gpus",)),
        ("eplb-gpus-float", f("e-gf.json", {**ok, "num_gpus": 2.0}), "eplb-json", ("num_gpus",)),
        ("eplb-dup-key", f("e-dup.json", '{"phy2log": [[0, 1]], "phy2log": [[1, 0]], "num_gpus": 1}'), "eplb-json",
         ("phy2log",)),
        ("eplb-not-utf8", f("e-latin.json", b'{"phy2log": [[0, 1]], "x": "\xe9"}'), "eplb-json", ("e-latin.json",)),
        ("eplb-list", f("e-list.json", [[0, 1]]), "eplb-json", ("e-list.json",)),
        ("eplb-pt-garbage", f("e.pt", os.urandom(100)), "eplb-pt", ("e.pt",)),
        ("sglang-bool", f("s-bool.json", {"physical_to_logical_map": [[0, True]]}), "sglang-json",
         ("physical_to_logical_map", "num-gpus", "num_gpus")),
        ("sglang-empty", f("s-empty.json", {}), "sglang-json", ("s-empty.json",)),
        ("trtllm-bomb", f("t-bomb.yaml", BOMB + "num_slots: 2\n"), "trtllm-yaml", ("max_yaml_nodes",)),
        ("trtllm-dup", f("t-dup.yaml", "num_slots: 2\nnum_slots: 3\n"), "trtllm-yaml", ("num_slots",)),
        ("trtllm-not-utf8", f("t-latin.yaml", b"num_slots: \xe9\n"), "trtllm-yaml", ("t-latin.yaml",)),
        ("trtllm-bool-slot", f("t-bool.yaml", "# placement: num_gpus=2\nnum_slots: 2\ninitial_global_assignments:\n"
                                              "  0: [0, true, 2, 3]\n"), "trtllm-yaml", ("initial_global",)),
        ("vllm-bool", f("v-bool.json", {"moe_layer_count": 1, "layer_list": [{"layer_id": 0, "device_count": 1,
                                        "device_list": [{"device_id": 0, "device_expert": [0, True]}]}]}),
         "vllm-ascend", ("device_expert", "v-bool.json")),
        ("load-object-npy", None, "expert-load", ("holds Python objects",)),
        ("load-bool-json", f("l-bool.json", {"logical_count": [[1, True, 3]]}), "expert-load", ("logical_count",)),
        ("load-frac-json", f("l-frac.json", {"logical_count": [[1, 2.5, 3]]}), "expert-load", ("logical_count",)),
        ("load-random-npz", f("l-r.npz", os.urandom(80)), "expert-load", ("l-r.npz",)),
        ("dump-random-pt", f("d.pt", os.urandom(80)), "sglang-dump", ("d.pt",)),
        ("dump-json", f("d.json", {}), "sglang-dump", ("d.json", "extension")),
    ]
    out = []
    for cid, path, fmt, names in cases:
        if path is None:
            path = tmp / "l-obj.npy"
            with open(path, "wb") as fh:
                np.save(fh, np.array([[1, "a"]], dtype=object), allow_pickle=True)
        extra = ["--top-k", "1"] if fmt == "expert-load" else ["--num-gpus", "2"] if fmt.startswith("sglang-j") else []
        out.append((cid, ["import", path, "--format", fmt, *extra], names))
    (tmp / "idir.json").mkdir(exist_ok=True)
    out.append(("directory", ["import", tmp / "idir.json", "--format", "eplb-json"], ("is a directory",)))
    out.append(("two-inputs", ["import", tmp / "e-bool.json", tmp / "e-bool.json", "--format", "eplb-json"],
                ("INPUT",)))
    return out


def test_bad_imports(tmp_path, good):
    failures = []
    for cid, argv, names in interop_cases(tmp_path):
        suffix = ".npz" if argv[3] in ("expert-load", "sglang-dump") else ".json"
        out = tmp_path / f"old{suffix}"
        out.write_bytes((good / "old.json").read_bytes())
        try:
            refused([*argv, "--out", out], names, inputs=tuple(a for a in argv if isinstance(a, Path)), outputs=(out,))
        except AssertionError as exc:
            failures.append(f"{cid}: {exc}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------ hypothesis fuzz
def accepted_or_refused(argv: list, inputs: tuple[Path, ...] = (), outputs: tuple[Path, ...] = ()) -> None:
    """A generated input may be valid; if it is not, it is refused cleanly (exit 2, one line, no traceback),
    and an output that existed before stays as it was either way unless the command succeeded."""
    before = {o: o.read_bytes() for o in outputs if o.is_file()}
    rc, _, stderr = cli(argv)
    assert rc in (0, 2), f"exit {rc} for {argv}: {stderr}"
    if rc == 2:
        SEEN.add(_fingerprint(argv, list(inputs)))
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("placement: error: "), repr(stderr)
        assert "Traceback" not in stderr and "allow_pickle" not in stderr
        for o, data in before.items():
            assert o.read_bytes() == data, f"{o} changed"


_SCALARS = st.one_of(st.integers(min_value=-3, max_value=10), st.integers(), st.floats(allow_nan=True),
                     st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(0, 9), max_size=3))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["name", "num_layers", "num_experts", "top_k", "num_groups",
                                               "topk_groups", "num_shared_experts", "first_moe_layer", "hidden_size",
                                               "weight_dtype", "colour"]), _SCALARS, max_size=6))
def test_fuzz_npz_model(tmp_path, fields):
    """Random model specs in a native trace archive."""
    model = {"num_layers": 2, "num_experts": 8, "top_k": 2, **fields}
    try:
        text = json.dumps(model)
    except ValueError:
        return
    p = npz(tmp_path, "m.npz", **{**HEADER, "model": np.array(text)}, experts=EX)
    accepted_or_refused(["trace", "info", p], inputs=(p,))


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzz_npz_bytes(tmp_path, good, flips, cut):
    """Byte flips and truncations of a valid native trace."""
    data = bytearray((good / "t.npz").read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    p = mutated(tmp_path, "f.npz", bytes(data))
    out = tmp_path / "o.json"
    out.write_bytes(b'{"old": true}')
    accepted_or_refused(["trace", "info", p], inputs=(p,))


@FUZZ
@given(rows=st.lists(st.lists(st.one_of(st.integers(-2, 9), st.integers(), st.floats(), st.text(max_size=3),
                                        st.just("")), min_size=4, max_size=6), min_size=1, max_size=6),
       extra=st.sampled_from(["", ",weight", ",origin", ",weight,origin"]))
def test_fuzz_csv(tmp_path, rows, extra):
    """Random long-format CSV rows (numbers, huge numbers, text, blanks)."""
    head = "token,layer,rank_in_topk,expert" + extra
    text = head + "\n" + "\n".join(",".join(str(v).replace(",", ";").replace("\n", " ") for v in r) for r in rows)
    p = mutated(tmp_path, "f.csv", text + "\n")
    accepted_or_refused(["trace", "info", p], inputs=(p,))


@FUZZ
@given(num_experts=_SCALARS, slots=st.recursive(_SCALARS, lambda c: st.lists(c, max_size=4), max_leaves=12),
       extra=st.dictionaries(st.sampled_from(["num_layers", "num_gpus", "slots_per_gpu", "metadata", "routing"]),
                             _SCALARS, max_size=2))
def test_fuzz_placement(tmp_path, good, num_experts, slots, extra):
    """Random placement documents through export (which must not touch its old output when refusing)."""
    doc = {"schema": "placement/1", "num_experts": num_experts, "slots": slots, **extra}
    try:
        text = json.dumps(doc, allow_nan=True)
    except ValueError:
        return
    p = mutated(tmp_path, "f.json", text)
    out = tmp_path / "o.json"
    out.write_bytes(b'{"old": true}')
    accepted_or_refused(["export", "--placement", p, "--format", "eplb-json", "--out", out], inputs=(p,),
                        outputs=(out,))


_YAML_VALUES = st.one_of(_SCALARS, st.sampled_from(["gpu", "GPU", "nic", "Gpu", "s0", "a", "b", "sw", "*x", "&x a"]))


@FUZZ
@given(nodes=st.lists(st.dictionaries(st.sampled_from(["id", "kind", "server", "rack", "zone"]), _YAML_VALUES,
                                      max_size=4), max_size=4),
       links=st.lists(st.dictionaries(st.sampled_from(["a", "b", "tier", "bandwidth_GBps", "latency_us"]),
                                      _YAML_VALUES, max_size=5), max_size=4))
def test_fuzz_topology(tmp_path, nodes, links):
    """Random topology YAML documents (written with json.dumps, which YAML reads, or as raw flow text)."""
    try:
        text = "nodes: " + json.dumps(nodes) + "\nlinks: " + json.dumps(links) + "\n"
    except ValueError:
        return
    p = mutated(tmp_path, "f.yaml", text)
    accepted_or_refused(["topology", "show", p], inputs=(p,))


_METHOD_OPTIONS = sorted({(m, o.name) for m, meth in __import__("placement").METHODS.items() for o in meth.options})


@FUZZ
@given(pick=st.sampled_from(_METHOD_OPTIONS),
       value=st.one_of(st.sampled_from(["-1", "-2", "0", "1", "2.5", "nan", "inf", "-inf", "true", "", "x", "1e3",
                                        "highs", "milp", "9" * 30]), st.text(max_size=4)))
def test_fuzz_options(tmp_path, good, pick, value):
    """Every option of every method with odd values: checked before any file is read (so no solve runs)."""
    method, name = pick
    argv = ["solve", "--trace", tmp_path / "missing.npz", "--topology", "fat-tree:2x2", "--method", method,
            "--option", f"{name}={value}"]
    rc, _, stderr = cli(argv)
    # a bad option is refused naming it; a good one reaches the (missing) trace, which is refused naming the file
    assert rc == 2 and len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert name in stderr or "missing.npz" in stderr, stderr
    if "missing.npz" not in stderr:
        SEEN.add(_fingerprint(argv, []))


# ---------------------------------------------------------------------- real exit status, permissions
SCRIPT = shutil.which("placement")


def _run(*args) -> subprocess.CompletedProcess:
    cmd = [SCRIPT, *map(str, args)] if SCRIPT else [sys.executable, "-m", "placement", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["npz-corrupt", "yaml-bomb", "placement-bool", "option-negative", "empty-topology"])
def test_real_exit_status(tmp_path, good, case):
    """The installed script exits 2 with one line for a few of the cases above (not just main()'s return)."""
    raw = bytearray((good / "t.npz").read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 40] = bytes(40)
    argv = {
        "npz-corrupt": ["trace", "info", mutated(tmp_path, "c.npz", bytes(raw))],
        "yaml-bomb": ["topology", "show", mutated(tmp_path, "b.yaml", BOMB + NODES + LINKS)],
        "placement-bool": ["export", "--placement", mutated(tmp_path, "p.json", json.dumps(
            {"schema": "placement/1", "num_experts": 2, "slots": [[[0, True]]]})), "--format", "eplb-json",
            "--out", tmp_path / "o.json"],
        "option-negative": ["solve", "--trace", good / "t.npz", "--topology", "fat-tree:2x2", "--method", "eplb",
                            "--option", "redundant=-5", "--out", tmp_path / "o.json"],
        "empty-topology": ["solve", "--trace", good / "t.npz", "--topology", ""],
    }[case]
    r = _run(*argv)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.json").exists()
    SEEN.add(_fingerprint(["subprocess", *argv], []))


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(ROOT, reason="running as root: chmod 000 does not stop root from reading or writing")
def test_unreadable_input_and_unwritable_output(tmp_path, good):
    """As an unprivileged user: an unreadable trace and an unwritable --out folder fail before any solve."""
    t = tmp_path / "t.npz"
    shutil.copy(good / "t.npz", t)
    t.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused(["solve", "--trace", t, "--topology", "fat-tree:2x2"], ("permission denied",))
        refused(["solve", "--trace", good / "t.npz", "--topology", "fat-tree:2x2", "--method", "transmission",
                 "--out", locked / "p.json"], ("not writable",))
    finally:
        t.chmod(0o644)
        locked.chmod(0o755)


@pytest.mark.skipif(not (ROOT and shutil.which("setpriv")), reason="needs root and setpriv to drop the capabilities")
def test_unreadable_input_and_unwritable_output_without_capabilities(tmp_path, good):
    """Root with every capability dropped (setpriv) obeys file permissions like an unprivileged user: the real
    CLI process refuses an unreadable trace and an unwritable --out folder on one line, before any solve."""
    t = tmp_path / "t.npz"
    shutil.copy(good / "t.npz", t)
    t.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "placement"]
    try:
        for argv, want in ((["solve", "--trace", str(t), "--topology", "fat-tree:2x2"], "permission denied"),
                           (["compare", "--trace", str(good / "t.npz"), "--topology", "fat-tree:2x2", "--methods",
                             "eplb,exflow", "--out", str(locked / "c.csv")], "not writable")):
            r = subprocess.run([*drop, *argv], capture_output=True, text=True, env=env, timeout=120)
            assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
            assert len(r.stderr.splitlines()) == 1 and want in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert list(locked.iterdir()) == []
    finally:
        t.chmod(0o644)
        locked.chmod(0o755)


def test_unreadable_and_unwritable_code_paths(tmp_path, good, monkeypatch):
    """The same two checks without relying on permissions (which root ignores): the open and the temporary file
    are made to fail, and the refusal comes before the trace is even loaded."""
    import placement.trace.io as trace_io

    loaded = []
    monkeypatch.setattr(trace_io, "load_trace", lambda *a, **k: loaded.append(a))
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self.name == "t.npz":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    refused(["solve", "--trace", good / "t.npz", "--topology", "fat-tree:2x2"], ("permission denied",))
    monkeypatch.setattr(Path, "open", real_open)
    import tempfile

    def no_temp(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    refused(["solve", "--trace", good / "t.npz", "--topology", "fat-tree:2x2", "--out", tmp_path / "p.json"],
            ("not writable",))
    assert loaded == []


def test_limits_are_stated_and_can_be_raised(monkeypatch, good):
    """A refusal names the limit and its variable; setting the variable moves the limit both ways."""
    monkeypatch.setenv("PLACEMENT_MAX_GPUS", "3")
    line = refused(["topology", "show", "fat-tree:2x2"], ("PLACEMENT_MAX_GPUS",))
    assert "4 GPUs" in line and "limit of 3 (max_gpus)" in line
    monkeypatch.setenv("PLACEMENT_MAX_GPUS", "4")
    assert cli(["topology", "show", "fat-tree:2x2"])[0] == 0
    monkeypatch.setenv("PLACEMENT_MAX_REPLICA_TABLE_ENTRIES", "10")  # 2 layers x 4 GPUs x 8 experts x 1 = 64
    refused(["evaluate", "--placement", good / "p.json", "--trace", good / "t.npz", "--topology", "fat-tree:2x2"],
            ("max_replica_table_entries",))
    monkeypatch.setenv("PLACEMENT_MAX_GPUS", "lots")
    refused(["topology", "show", "fat-tree:2x2"], ("PLACEMENT_MAX_GPUS",))
