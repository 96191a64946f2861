"""Tiny known-optimal instances, run over every available backend, plus HiGHS/CP-SAT agreement.

Each instance writes its maths and the reasoning for its optimum in a comment. Results are checked
against an independent certificate: ``A @ x`` against the row bounds, the column bounds and
integrality, recomputed with numpy, and the objective recomputed as ``c @ x + offset`` -- the
solver's own claims are never trusted alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement.backends import BACKENDS, ModelNotSupportedError, SolveParams, Termination
from placement.milp import MilpBuilder, MilpModel

TOL = 1e-6


@dataclass(frozen=True)
class Instance:
    name: str
    model: MilpModel
    termination: frozenset[str]  # accepted terminations ("unbounded" may be reported as either)
    optimum: float | None = None
    solution: dict[str, np.ndarray] | None = None  # expected block values when the optimum is unique


def assignment_3x3() -> Instance:
    # min sum_ij C[i,j] x[i,j]  s.t.  sum_j x[i,j] = 1 (each worker one job),
    #                                sum_i x[i,j] = 1 (each job one worker), x binary.
    # C = [[4,1,3],[2,0,5],[3,2,2]]. The 6 permutations cost: (0,1,2)=6, (0,2,1)=11, (1,0,2)=5,
    # (1,2,0)=9, (2,0,1)=7, (2,1,0)=6, so the optimum is 5: worker 0->job 1, 1->0, 2->2 (unique).
    C = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]], dtype=float)
    b = MilpBuilder(name="assignment_3x3")
    x = b.add_block("x", (3, 3), ("worker", "job"), integer=True, upper=1, cost=C)
    b.add_row_sums("worker", x, lower=1, upper=1)
    b.add_row_sums("job", x.T, lower=1, upper=1)
    sol = np.zeros((3, 3))
    sol[[0, 1, 2], [1, 0, 2]] = 1
    return Instance("assignment_3x3", b.build(), frozenset({"optimal"}), 5.0, {"x": sol})


def assignment_quarters() -> Instance:
    # The same assignment with every cost divided by 4: same argmin, optimum 5/4. The costs are
    # exact decimals, so CP-SAT scales them by 100 with no scaling error.
    inst = assignment_3x3()
    m = inst.model
    model = MilpModel(c=m.c / 4, A=m.A, row_lower=m.row_lower, row_upper=m.row_upper,
                      col_lower=m.col_lower, col_upper=m.col_upper, integrality=m.integrality,
                      blocks=m.blocks, name="assignment_quarters")
    return Instance("assignment_quarters", model, frozenset({"optimal"}), 1.25, inst.solution)


def knapsack() -> Instance:
    # max 10 y0 + 13 y1 + 7 y2 + 8 y3  s.t.  5 y0 + 6 y1 + 3 y2 + 4 y3 <= 10, y binary.
    # Any three items weigh >= 3+4+5 = 12 > 10, so at most two. Feasible pairs: {0,2} w8 v17,
    # {0,3} w9 v18, {1,2} w9 v20, {1,3} w10 v21, {2,3} w7 v15 ({0,1} weighs 11). Optimum 21 = {1,3}.
    b = MilpBuilder(sense="max", name="knapsack")
    y = b.add_block("y", 4, "item", integer=True, upper=1, cost=[10, 13, 7, 8])
    b.add_rows("weight", 1, np.zeros(4, int), y, [5, 6, 3, 4], upper=10)
    return Instance("knapsack", b.build(), frozenset({"optimal"}), 21.0, {"y": np.array([0., 1, 0, 1])})


def small_placement() -> Instance:
    # 4 experts with loads w = [5,3,2,1] on 2 GPUs at distances d = [1,3] from the tokens.
    # min sum_eg w_e d_g x[e,g] + 100  s.t.  sum_g x[e,g] = 1 (each expert placed once),
    #                                       sum_e x[e,g] <= 2 (capacity: two experts per GPU).
    # Each expert costs w_e on GPU 0 and 3 w_e on GPU 1; moving an expert to GPU 1 costs 2 w_e
    # extra, and two experts must go there, so move the two lightest (2 and 1):
    # (5+3)*1 + (2+1)*3 = 17, plus the offset 100 -> 117 (unique).
    w, d = np.array([5., 3, 2, 1]), np.array([1., 3])
    b = MilpBuilder(name="small_placement")
    x = b.add_block("x", (4, 2), ("expert", "gpu"), integer=True, upper=1, cost=np.outer(w, d))
    b.add_row_sums("place", x, lower=1, upper=1)
    b.add_row_sums("capacity", x.T, upper=2)
    sol = np.array([[1., 0], [1, 0], [0, 1], [0, 1]])
    return Instance("small_placement", b.build(offset=100.0), frozenset({"optimal"}), 117.0, {"x": sol})


def infeasible() -> Instance:
    # 3 experts must each be placed on the single GPU (x[e] = 1), which holds at most 2:
    # sum_e x[e] = 3 > 2. No feasible point.
    b = MilpBuilder(name="infeasible")
    x = b.add_block("x", 3, "expert", integer=True, upper=1, cost=1)
    b.add_rows("place", 3, np.arange(3), x, lower=1, upper=1)
    b.add_row_sums("capacity", x[None, :], upper=2)
    return Instance("infeasible", b.build(), frozenset({"infeasible"}))


def unbounded() -> Instance:
    # min -u - v  s.t.  u - v <= 1, u, v >= 0 integer. (u, v) = (t, t) is feasible for every t,
    # with objective -2t -> -inf. Some solvers only prove "infeasible or unbounded".
    b = MilpBuilder(name="unbounded")
    z = b.add_block("z", 2, "var", integer=True, cost=[-1, -1])
    b.add_rows("diff", 1, [0, 0], z, [1, -1], upper=1)
    return Instance("unbounded", b.build(), frozenset({"unbounded", "infeasible_or_unbounded"}))


def lp_only() -> Instance:
    # min -p - 2q  s.t.  p + q <= 4, p + 3q <= 7, p, q >= 0 continuous.
    # Vertices: (0,0): 0, (4,0): -4, (0,7/3): -14/3, and p+q=4 & p+3q=7 -> (2.5, 1.5): -5.5.
    # Optimum -5.5 at (2.5, 1.5), a fractional vertex.
    b = MilpBuilder(name="lp_only")
    z = b.add_block("z", 2, "var", cost=[-1, -2])
    b.add_rows("cap", 2, [0, 0, 1, 1], [z[0], z[1], z[0], z[1]], [1, 1, 1, 3], upper=[4, 7])
    return Instance("lp_only", b.build(), frozenset({"optimal"}), -5.5, {"z": np.array([2.5, 1.5])})


INSTANCES = [assignment_3x3(), assignment_quarters(), knapsack(), small_placement(), infeasible(),
             unbounded(), lp_only()]


def backend_or_skip(name: str):
    backend = BACKENDS[name]
    ok, reason = backend.available()
    if not ok:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return backend


def assert_certificate(model: MilpModel, x: np.ndarray) -> None:
    """Independent feasibility check of ``x`` with numpy."""
    assert x.shape == (model.num_vars,) and x.dtype == np.float64
    ax = model.A.toarray() @ x
    assert np.all(ax >= model.row_lower - TOL), "row lower bound violated"
    assert np.all(ax <= model.row_upper + TOL), "row upper bound violated"
    assert np.all(x >= model.col_lower - TOL) and np.all(x <= model.col_upper + TOL), "column bound violated"
    xi = x[model.integrality]
    assert np.all(np.abs(xi - np.round(xi)) <= TOL), "integrality violated"


def cannot_represent(backend, model: MilpModel) -> bool:
    """CP-SAT refuses continuous or unbounded columns by contract."""
    return backend.name == "cpsat" and (not model.integrality.all() or
                                        not np.isfinite(np.r_[model.col_lower, model.col_upper]).all())


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("inst", INSTANCES, ids=[i.name for i in INSTANCES])
def test_known_instance(inst: Instance, backend_name: str) -> None:
    backend = backend_or_skip(backend_name)
    if cannot_represent(backend, inst.model):
        with pytest.raises(ModelNotSupportedError, match="cpsat"):
            backend.solve(inst.model)
        return
    r = backend.solve(inst.model, SolveParams(rel_gap=0.0))
    assert r.backend == backend_name
    assert r.termination.value in inst.termination, (r, r.message)
    assert r.wall_time >= 0
    if r.termination is Termination.OPTIMAL:
        assert r.solution is not None
        assert_certificate(inst.model, r.solution)
        assert r.objective == pytest.approx(inst.optimum, abs=TOL)
        assert r.objective == pytest.approx(inst.model.objective_value(r.solution), abs=TOL)
        # The bound is proven and on the right side of the optimum.
        side = 1 if inst.model.sense == "min" else -1
        assert side * (r.bound - inst.optimum) <= TOL
        assert r.gap == pytest.approx(0.0, abs=TOL)
        assert r.scaling_error == 0.0
        for name, expected in (inst.solution or {}).items():
            np.testing.assert_allclose(inst.model.block_values(r.solution, name), expected, atol=TOL)
    else:
        assert r.solution is None and math.isnan(r.gap)
        if r.termination is Termination.UNBOUNDED:
            assert r.objective == -math.inf if inst.model.sense == "min" else math.inf


# ---------------------------------------------------------------------------- agreement


@st.composite
def placement_models(draw) -> MilpModel:
    # Assign E experts (weights w_e) to G GPUs (capacity cap_g) at integer cost C[e,g]:
    # min sum C x  s.t.  sum_g x[e,g] = 1,  sum_e w_e x[e,g] <= cap_g,  x binary.
    E = draw(st.integers(2, 6))
    G = draw(st.integers(2, 4))
    C = np.array(draw(st.lists(st.integers(0, 20), min_size=E * G, max_size=E * G)), float).reshape(E, G)
    w = np.array(draw(st.lists(st.integers(1, 5), min_size=E, max_size=E)), float)
    cap = np.array(draw(st.lists(st.integers(0, 12), min_size=G, max_size=G)), float)
    sense = draw(st.sampled_from(["min", "max"]))
    b = MilpBuilder(sense=sense)
    x = b.add_block("x", (E, G), ("expert", "gpu"), integer=True, upper=1, cost=C)
    b.add_row_sums("place", x, lower=1, upper=1)
    b.add_row_sums("capacity", x.T, np.broadcast_to(w, (G, E)), upper=cap)
    return b.build()


@settings(max_examples=100, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(model=placement_models())
def test_highs_and_cpsat_agree(model: MilpModel) -> None:
    highs, cpsat = backend_or_skip("highs"), backend_or_skip("cpsat")
    params = SolveParams(rel_gap=0.0, threads=1, seed=0)
    rh, rc = highs.solve(model, params), cpsat.solve(model, params)
    assert rh.termination == rc.termination, (rh, rc)
    if rh.termination is Termination.OPTIMAL:
        assert_certificate(model, rh.solution)
        assert_certificate(model, rc.solution)
        tol = TOL + max(rh.gap, rc.gap) * max(1.0, abs(rh.objective))
        assert abs(rh.objective - rc.objective) <= tol
    else:
        assert rh.termination is Termination.INFEASIBLE
