"""Shared tiny instances and the registry guard.

Factories (session fixtures that return a function, so a test picks its sizes and seed):

* ``chain_topology(sizes)``: servers of ``sizes[i]`` GPUs on an NVSwitch whose uplinks hang off a
  chain of switches, ``d(server i, server j) = 2 + |i - j|`` hops, so servers differ in their mean
  distance (hop costs that are not all equal).
* ``nic_topology()``: 4 GPUs on 2 servers, one NIC per GPU with unequal bandwidths (100, 25, 50,
  10 GB/s) and latencies (1-4 us) into one switch: every GPU has its own bottleneck link.
* ``skewed_trace(G, L=2, E=4, k=2, tokens=60, seed=0, shared=0)``: skewed expert popularity per
  layer (Dirichlet(0.7)), origins on ``G`` ranks.
* ``sticky_trace(L, E, k, n, seed, stick=0.6, ranks=None)``: tokens that keep their expert
  (shifted by one) into the next layer with probability ``stick`` (inter-layer affinity);
  ``ranks`` adds origins drawn after the experts.
* ``random_trace(L, E, k, n, ranks=None, seed=0)``: uniformly random distinct top-k, origins
  on ``ranks`` ranks.

Registry: ``restore_registry`` lets a test register methods and puts :data:`placement.METHODS`
back afterwards; every test is checked at teardown to leave the registry as it found it, and the
session to end with the catalogue it started with.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import networkx as nx
import numpy as np
import pytest

from placement import METHODS
from placement.registry import Method
from placement.topology import Topology
from placement.trace import ModelSpec, Trace


# ------------------------------------------------------------------------------------------ topologies
def _chain_topology(sizes: tuple[int, ...]) -> Topology:
    g = nx.Graph()
    for i, n in enumerate(sizes):
        g.add_node(f"nv{i}", kind="nvswitch", server=f"s{i}")
        for j in range(n):
            g.add_node(f"gpu{i}.{j}", kind="gpu", server=f"s{i}")
            g.add_edge(f"gpu{i}.{j}", f"nv{i}", bandwidth=900e9, tier="nvlink")
        g.add_node(f"sw{i}", kind="switch")
        g.add_edge(f"nv{i}", f"sw{i}", bandwidth=50e9 * (i + 1), tier="nic")
        if i:
            g.add_edge(f"sw{i - 1}", f"sw{i}", bandwidth=100e9, tier="spine")
    return Topology.from_graph(g, name=f"chain{tuple(sizes)}")


def _nic_topology() -> Topology:
    g = nx.Graph()
    g.add_node("sw", kind="switch")
    bws = [100e9, 25e9, 50e9, 10e9]
    for i in range(4):
        s = f"s{i // 2}"
        g.add_node(f"gpu{i}", kind="gpu", server=s)
        g.add_node(f"nic{i}", kind="nic", server=s)
        g.add_edge(f"gpu{i}", f"nic{i}", bandwidth=200e9, latency=1e-6, tier="pcie")
        g.add_edge(f"nic{i}", "sw", bandwidth=bws[i], latency=(i + 1) * 1e-6, tier="nic")
    return Topology.from_graph(g, name="nic")


@pytest.fixture(scope="session")
def chain_topology() -> Callable[[tuple[int, ...]], Topology]:
    return _chain_topology


@pytest.fixture(scope="session")
def nic_topology() -> Callable[[], Topology]:
    return _nic_topology


# ------------------------------------------------------------------------------------------ traces
def _skewed_trace(G: int, *, L: int = 2, E: int = 4, k: int = 2, tokens: int = 60, seed: int = 0,
                  shared: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    pop = rng.dirichlet(np.ones(E) * 0.7, size=L)  # skewed popularity per layer
    ex = np.stack([np.stack([rng.choice(E, k, replace=False, p=pop[layer]) for layer in range(L)])
                   for _ in range(tokens)])
    spec = ModelSpec("tiny", num_layers=L, num_experts=E, top_k=k, num_shared_experts=shared)
    return Trace.from_tokens(spec, ex, origin=rng.integers(0, G, tokens), num_ranks=G)


def _sticky_trace(L: int, E: int, k: int, n: int, seed: int, stick: float = 0.6, ranks: int | None = None) -> Trace:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(E) * 2)
    ex = np.empty((n, L, k), dtype=np.int64)
    ex[:, 0] = np.argsort(rng.random((n, E)) / p, axis=1)[:, :k]
    for layer in range(1, L):
        fresh = np.argsort(rng.random((n, E)) / p, axis=1)[:, :k]
        keep = rng.random(n) < stick
        shifted = (ex[:, layer - 1] + 1) % E
        ex[:, layer] = np.where(keep[:, None], shifted, fresh)
    origin = rng.integers(0, ranks, n) if ranks else None
    return Trace.from_tokens(ModelSpec("tiny", L, E, k), ex, origin=origin, num_ranks=ranks)


def _random_trace(L: int, E: int, k: int, n: int, *, ranks: int | None = None, seed: int = 0,
                  name: str = "cli") -> Trace:
    rng = np.random.default_rng(seed)
    ex = np.argsort(rng.random((n, L, E)), axis=2)[:, :, :k]
    origin = rng.integers(0, ranks, n) if ranks else None
    return Trace.from_tokens(ModelSpec(name, num_layers=L, num_experts=E, top_k=k), ex, origin=origin,
                             num_ranks=ranks)


@pytest.fixture(scope="session")
def skewed_trace() -> Callable[..., Trace]:
    return _skewed_trace


@pytest.fixture(scope="session")
def sticky_trace() -> Callable[..., Trace]:
    return _sticky_trace


@pytest.fixture(scope="session")
def random_trace() -> Callable[..., Trace]:
    return _random_trace


# ------------------------------------------------------------------------------------------ registry
def _snapshot() -> list[tuple[str, Method]]:
    return list(METHODS.items())


def _restore(snapshot: list[tuple[str, Method]]) -> None:
    METHODS.clear()
    METHODS.update(snapshot)


@pytest.fixture
def python_sigint_handler() -> Iterator[None]:
    """A process started in the background by a shell without job control inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler; install Python's own for these tests."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def restore_registry() -> Iterator[dict[str, Method]]:
    """:data:`placement.METHODS`, put back (entries and order) when the test ends."""
    snapshot = _snapshot()
    try:
        yield METHODS
    finally:
        _restore(snapshot)


_BEFORE = pytest.StashKey[list]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_BEFORE] = _snapshot()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    result = yield
    before = item.stash.get(_BEFORE, None)
    if before is not None and _snapshot() != before:
        _restore(before)
        raise AssertionError(f"{item.nodeid} changed placement.METHODS (now restored); register test methods "
                             "through the restore_registry fixture")
    return result


@pytest.fixture(scope="session", autouse=True)
def _session_keeps_the_catalogue() -> Iterator[None]:
    start = _snapshot()
    yield
    assert _snapshot() == start, "the test session ended with a registry that is not the catalogue it started with"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module of runtime tests: tiny tensors, and the thread pool only adds
    contention with the spawned ranks (torch imported here, so modules without torch never load it)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
