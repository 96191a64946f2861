"""Regenerate every sample trace in this folder (deterministic: fixed seeds).

Run from anywhere: ``python data/traces/make_samples.py``.  See README.md for what each file is.
The arrays are identical on every run; the ``.npz`` zip members carry the write time, so the
files' bytes (not their contents) differ between runs.
"""

from __future__ import annotations

from pathlib import Path

from placement.trace import ModelSpec, Trace, save_trace
from placement.trace.synthesize import synthesize

HERE = Path(__file__).resolve().parent

#: file stem -> (preset, tokens, seed, origin ranks, gate weights)
SAMPLES: dict[str, tuple[str, int, int, int | None, bool]] = {
    "mixtral-8x7b": ("mixtral-8x7b", 4096, 0, 8, True),
    "deepseekmoe-16b": ("deepseekmoe-16b", 2048, 0, 16, False),
    "deepseek-v3": ("deepseek-v3", 2048, 0, 32, False),
    "qwen3-235b-a22b": ("qwen3-235b-a22b", 1024, 0, 16, False),
    "olmoe": ("olmoe", 2048, 0, 8, False),
}


def main() -> None:
    for stem, (preset, tokens, seed, ranks, weights) in SAMPLES.items():
        trace = synthesize(preset, tokens, seed=seed, num_ranks=ranks, weights=weights)
        path = save_trace(trace, HERE / f"{stem}.npz")
        print(f"{path.name}: {tokens} tokens, seed {seed}, {ranks} ranks, weights={weights}, "
              f"{path.stat().st_size / 1024:.0f} KiB")
        if stem == "mixtral-8x7b":
            # ExFlow's format: [tokens, layers] top-1 ids (the first slot = largest gate weight)
            head = trace.head(1024)
            spec = trace.model
            top1 = Trace.from_tokens(ModelSpec(spec.name, spec.num_layers, spec.num_experts, 1),
                                     head.experts[:, :, :1], metadata=dict(head.metadata))
            p = save_trace(top1, HERE / "mixtral-8x7b-top1.npy")
            print(f"{p.name}: first 1024 tokens, top-1 slot, {p.stat().st_size / 1024:.0f} KiB")
            # long format: one row per (token, layer, rank_in_topk) with weight and origin
            p = save_trace(trace.head(64), HERE / "mixtral-8x7b-64tokens.csv")
            print(f"{p.name}: first 64 tokens, long format, {p.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
