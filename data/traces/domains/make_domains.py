"""Convert the OLMoE repository's per-domain expert counts into count traces (``.npz``).

Source: github.com/allenai/OLMoE (Apache-2.0), commit ``357454f4f647385839c0ff6b99a688dc7cd9c13f``
(the domain files were last changed in ``2aecf25991ac1bbfb75d96f01853fe65e1f46e3f``), files

    scripts/routing_output/olmoe/expert_counts/{arxiv,book,c4,github,wikipedia}.pkl
    scripts/routing_output/mistral/expert_counts/{arxiv,book,c4,github,wikipedia}.pkl

written by ``scripts/run_routing_analysis.py`` there: each is a pickled list of three
``collections.Counter`` (hidden layers 0, 7 and 15), keyed by expert id (a numpy ``int64``), valued
by the number of top-k selections of that expert over 208,896 tokens (102 sequences of 2,048
tokens) of the domain.  OLMoE is OLMoE-1B-7B-0924 (top-8 of 64), "mistral" is
Mixtral-8x7B-v0.1 (top-2 of 8).

Run from anywhere, giving the ``routing_output`` folder of a checkout (or the checkout itself):

    git clone https://github.com/allenai/OLMoE && git -C OLMoE checkout 357454f4f647385839c0ff6b99a688dc7cd9c13f
    python data/traces/domains/make_domains.py OLMoE/scripts/routing_output

Every input's git blob id is checked against the one at that commit (``--unchecked`` converts other
versions).  The pickles are read with an unpickler that admits only ``collections.Counter``, numpy
scalars and dtypes, so a tampered file cannot run code.  The counts are identical on every run; the
``.npz`` zip members carry the write time, so the files' bytes may differ.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from placement.trace import ModelSpec, Trace, load_trace, save_trace

HERE = Path(__file__).resolve().parent
REPO = "allenai/OLMoE"
COMMIT = "357454f4f647385839c0ff6b99a688dc7cd9c13f"
LICENSE = "Apache-2.0"
HIDDEN_LAYERS = (0, 7, 15)
DOMAINS = ("arxiv", "book", "c4", "github", "wikipedia")
TOKENS = 208_896  # 102 sequences of 2048 tokens per domain (run_routing_analysis.py)

#: output stem -> (folder under routing_output, model spec, Hugging Face model id)
MODELS: dict[str, tuple[str, ModelSpec, str]] = {
    "olmoe": ("olmoe", ModelSpec("olmoe-1b-7b", num_layers=3, num_experts=64, top_k=8, hidden_size=2048,
                                 intermediate_size=1024, num_hidden_layers=16, moe_layers=HIDDEN_LAYERS),
              "allenai/OLMoE-1B-7B-0924"),
    "mixtral-8x7b": ("mistral", ModelSpec("mixtral-8x7b", num_layers=3, num_experts=8, top_k=2, hidden_size=4096,
                                          intermediate_size=14336, num_hidden_layers=32, moe_layers=HIDDEN_LAYERS),
                     "mistralai/Mixtral-8x7B-v0.1"),
}

#: git blob id of every input at COMMIT (``git ls-tree -r COMMIT scripts/routing_output``)
BLOBS = {
    "olmoe/expert_counts/arxiv.pkl": "65ceee5901f81c650456e24ebeb52bb1cf98da03",
    "olmoe/expert_counts/book.pkl": "6bc80be4aff3e88b64eb3df1a993f98d653c2e1e",
    "olmoe/expert_counts/c4.pkl": "00a81db8a96e07ae0f2cd542755b35b58f47f0e6",
    "olmoe/expert_counts/github.pkl": "b97c3664893d4d5771717e646753234215323488",
    "olmoe/expert_counts/wikipedia.pkl": "17992827b47f1bb3963609158d2dbfa9bd61b3b2",
    "mistral/expert_counts/arxiv.pkl": "f119bcc3dfb586039882283da7caa4c55f45cb1c",
    "mistral/expert_counts/book.pkl": "13ed14e161a737ee93fdf4923ade82d2d3799d94",
    "mistral/expert_counts/c4.pkl": "ce6997457b159bd637a54e61ea2ddbff2bb4e736",
    "mistral/expert_counts/github.pkl": "b6e054f88b07b5cbc9e48f946defc3005920ff46",
    "mistral/expert_counts/wikipedia.pkl": "5b6267fb4d63783ee4abaf2819e6d59c772efbb4",
}


class CountsUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled list of Counters keyed by numpy integers needs."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 -- pickle's signature
        if (module, name) == ("collections", "Counter"):
            return Counter
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            try:
                from numpy._core.multiarray import scalar  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.multiarray import scalar
            return scalar
        raise pickle.UnpicklingError(f"refused global {module}.{name}: not a list of Counters")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_counts(path: Path, num_experts: int, top_k: int) -> np.ndarray:
    """``int64 [3, num_experts]``: the selections of each expert in hidden layers 0, 7, 15."""
    with path.open("rb") as f:
        obj = CountsUnpickler(f).load()
    if not isinstance(obj, list) or len(obj) != len(HIDDEN_LAYERS) or not all(isinstance(c, Counter) for c in obj):
        raise SystemExit(f"{path}: expected a list of {len(HIDDEN_LAYERS)} Counters, got {type(obj).__name__}")
    counts = np.zeros((len(obj), num_experts), dtype=np.int64)
    for i, counter in enumerate(obj):
        for key, value in counter.items():
            expert = int(key)
            if expert != key or not 0 <= expert < num_experts or int(value) != value or value < 0:
                raise SystemExit(f"{path}: layer {HIDDEN_LAYERS[i]} has entry {key!r}: {value!r}; expected "
                                 f"expert ids 0..{num_experts - 1} with non-negative integer counts")
            counts[i, expert] += int(value)
    per_layer = counts.sum(axis=1)
    if (per_layer != TOKENS * top_k).any():
        raise SystemExit(f"{path}: layers hold {per_layer.tolist()} selections; expected {TOKENS} tokens x "
                         f"top-{top_k} = {TOKENS * top_k} in each")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("routing_output", type=Path,
                        help="the scripts/routing_output folder of an allenai/OLMoE checkout (or the checkout)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    parser.add_argument("--unchecked", action="store_true",
                        help=f"convert inputs whose git blob ids differ from those at commit {COMMIT[:12]}")
    args = parser.parse_args(argv)
    src = args.routing_output
    if (src / "scripts" / "routing_output").is_dir():
        src = src / "scripts" / "routing_output"
    for stem, (folder, spec, hf_id) in MODELS.items():
        for domain in DOMAINS:
            rel = f"{folder}/expert_counts/{domain}.pkl"
            path = src / rel
            if not path.is_file():
                raise SystemExit(f"{path}: missing; give the scripts/routing_output folder of allenai/OLMoE")
            blob = git_blob_id(path.read_bytes())
            if blob != BLOBS[rel] and not args.unchecked:
                raise SystemExit(f"{path}: git blob {blob} is not {BLOBS[rel]} (commit {COMMIT[:12]}); "
                                 "pass --unchecked to convert it anyway")
            counts = read_counts(path, spec.num_experts, spec.top_k)
            metadata = {
                "synthetic": False,
                "description": f"{hf_id} expert selections (top-{spec.top_k} of {spec.num_experts}) per expert "
                               f"in hidden layers {list(HIDDEN_LAYERS)} over {TOKENS} tokens of {domain} text",
                "domain": domain,
                "hidden_layers": list(HIDDEN_LAYERS),
                "tokens": TOKENS,
                "hf_model": hf_id,
                "source_repository": f"https://github.com/{REPO}",
                "source_commit": COMMIT,
                "source_path": f"scripts/routing_output/{rel}",
                "source_blob": blob,
                "license": LICENSE,
                "attribution": "Muennighoff et al., OLMoE: Open Mixture-of-Experts Language Models (2024), "
                               "routing analysis data, Apache-2.0",
            }
            out = args.out / f"{stem}-{domain}.npz"
            save_trace(Trace.from_counts(spec, counts, source=out.name, metadata=metadata), out)
            back = load_trace(out)
            if not np.array_equal(back.layer_counts(), counts) or back.model != spec:
                raise SystemExit(f"{out}: does not read back as written")
            hot = counts.max(axis=1) / counts.mean(axis=1)
            print(f"{out.name}: {blob[:12]} -> hottest/mean expert per layer {np.round(hot, 2).tolist()}, "
                  f"{out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
