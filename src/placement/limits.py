"""Size limits on user input, checked *before* anything of that size is allocated.

Each limit has a default sized for a 24 GiB machine (``docs/limits.md`` gives the measurements behind
them) and an environment variable that raises or lowers it, e.g.
``PLACEMENT_MAX_TRACE_ENTRIES=4000000000 placement solve ...``.  A refusal names the limit, the
value asked for and the variable::

    trace.npz: field 'experts': 3000000000 expert ids (tokens x layers x k) exceed the limit of
    1000000000 (max_trace_entries); sample fewer tokens, or raise the limit with
    PLACEMENT_MAX_TRACE_ENTRIES=... if this machine has the memory (docs/limits.md)

>>> LIMITS["max_experts"].value() >= 256
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import input_error

__all__ = ["Limit", "LIMITS", "check_limit", "limit"]


@dataclass(frozen=True)
class Limit:
    """A named size limit: ``default`` unless the environment variable ``env`` sets another."""

    name: str
    default: int
    what: str  # what is counted, for the message ("expert ids (tokens x layers x k)")
    hint: str  # how to stay under it without raising it

    @property
    def env(self) -> str:
        return "PLACEMENT_" + self.name.upper()

    def value(self) -> int:
        """The limit in force: ``$PLACEMENT_<NAME>`` when set to a positive integer, else the default."""
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            value = int(raw.strip())
        except ValueError:
            raise input_error(f"must be a positive integer, got {raw!r}", "environment", self.env) from None
        if value < 1:
            raise input_error(f"must be a positive integer, got {raw!r}", "environment", self.env)
        return value


#: The limits by name.  Defaults keep every statistic and solver well inside 24 GiB (docs/limits.md).
LIMITS: dict[str, Limit] = {lim.name: lim for lim in (
    Limit("max_trace_entries", 1_000_000_000, "expert ids (tokens x layers x k)",
          "sample fewer tokens (Trace.head) or record fewer layers"),
    Limit("max_count_entries", 200_000_000, "load counts (ranks x layers x experts)",
          "fold the per-rank axis or record fewer layers"),
    Limit("max_layers", 4096, "MoE layers", "split the model"),
    Limit("max_experts", 8192, "experts per layer", "check num_experts"),
    Limit("max_top_k", 1024, "experts per token (top_k)", "check top_k"),
    Limit("max_gpus", 2048, "GPUs in a topology", "model a smaller expert-parallel group"),
    Limit("max_topology_nodes", 100_000, "nodes (GPUs, switches, NICs) in a topology",
          "merge switches that route alike"),
    Limit("max_topology_links", 1_000_000, "links in a topology", "merge parallel links"),
    Limit("max_placement_slots", 100_000_000, "placement slots (layers x gpus x slots_per_gpu)",
          "check num_layers, num_gpus and slots_per_gpu"),
    Limit("max_replica_table_entries", 250_000_000,
          "entries of the evaluator's nearest-replica tables (layers x gpus x experts x most replicas of an expert)",
          "give the hottest experts fewer replicas or evaluate on fewer GPUs"),
    Limit("max_file_bytes", 4 << 30, "bytes in one input file", "split the file"),
    Limit("max_archive_bytes", 8 << 30, "bytes unpacked from one archive or array file (.pt, .npz, .npy)",
          "split the file"),
    Limit("max_yaml_nodes", 5_000_000, "YAML nodes once aliases are expanded",
          "write the data out without nested aliases"),
)}


def limit(name: str) -> int:
    """The value in force of limit ``name`` (a key of :data:`LIMITS`)."""
    return LIMITS[name].value()


def check_limit(name: str, asked: int, source: str | None = None, field: str | None = None) -> None:
    """Raise an input error when ``asked`` exceeds limit ``name``; the message says how to raise it."""
    lim = LIMITS[name]
    cap = lim.value()
    if asked > cap:
        raise input_error(f"{asked} {lim.what} exceed the limit of {cap} ({lim.name}); {lim.hint}, or raise the "
                          f"limit with {lim.env}=... if this machine has the memory (docs/limits.md)", source, field)
