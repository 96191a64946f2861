"""Starting the ranks: spawned Gloo processes on one machine, or ``torchrun``.

Spawned mode (:func:`spawn_check`): the configuration is pickled into a fresh temporary
directory, W processes run ``python -m placement_runtime _worker DIR`` with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set, and meet through a :class:`torch.distributed.FileStore`
in that directory.  The parent polls them against one deadline: the first rank that exits
with an error, or the deadline passing, ends the run (the other ranks are terminated, then
killed) with a :class:`RankFailure` naming the rank and quoting its stderr.  Every
collective also runs under the process group's ``timeout``, so a rank blocked on a dead or
hung peer raises instead of waiting forever.

torchrun mode (:func:`init_from_env`): ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and the
``MASTER_*`` rendezvous come from ``torchrun``; NCCL on ``cuda:LOCAL_RANK`` when CUDA is there.

Fault injection for tests: ``PLACEMENT_RUNTIME_FAULT=exit:R`` makes rank ``R`` exit with
status 3 right after joining the group, ``hang:R`` makes it sleep instead.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .check import CheckConfig, CheckResults

__all__ = ["RankFailure", "spawn_check", "worker_main", "init_from_env", "apply_fault", "FAULT_ENV"]

FAULT_ENV = "PLACEMENT_RUNTIME_FAULT"
_CONFIG, _RESULT, _STORE = "config.pkl", "result.pkl", "store"


class RankFailure(RuntimeError):
    """A rank died, failed or did not finish within the deadline."""


def apply_fault(rank: int) -> None:
    """Test hook: act on :data:`FAULT_ENV` (``exit:R`` or ``hang:R``) if it names this rank."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    kind, _, who = spec.partition(":")
    if who.strip() != str(rank):
        return
    if kind == "exit":
        print(f"rank {rank}: exiting early ({FAULT_ENV}={spec})", file=sys.stderr, flush=True)
        os._exit(3)
    if kind == "hang":
        print(f"rank {rank}: hanging ({FAULT_ENV}={spec})", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class _Rank:
    rank: int
    proc: subprocess.Popen
    stderr: Path


def _stop(ranks: list[_Rank], grace: float = 2.0) -> None:
    for r in ranks:
        if r.proc.poll() is None:
            r.proc.terminate()
    end = time.monotonic() + grace
    for r in ranks:
        try:
            r.proc.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()


def spawn_check(config: CheckConfig, *, timeout: float = 60.0, backend: str = "gloo",
                gather_output: bool = False, env: dict[str, str] | None = None) -> CheckResults:
    """Run :func:`~placement_runtime.check.run_cases` on ``config.world`` spawned processes.

    Parameters
    ----------
    config:
        The check (its topology's GPU count is the world size).
    timeout:
        Seconds for the whole run (process start included) and for every collective.
    backend:
        ``"gloo"`` (CPU) or ``"nccl"`` (one CUDA device per rank).
    gather_output:
        Return every token's runtime output too (``CaseResult.output``).
    env:
        Extra environment variables for the ranks.

    Raises
    ------
    RankFailure
        A rank exited with an error or the run passed ``timeout``; the message names the rank(s)
        and quotes the first failing rank's stderr.
    """
    world = config.world
    with tempfile.TemporaryDirectory(prefix="placement-runtime-") as tmp:
        d = Path(tmp)
        with open(d / _CONFIG, "wb") as f:
            pickle.dump({"config": config, "timeout": float(timeout), "backend": backend,
                         "gather_output": gather_output}, f)
        ranks: list[_Rank] = []
        start = time.monotonic()
        deadline = start + float(timeout)
        try:
            for rank in range(world):
                child_env = dict(os.environ)
                child_env.update(env or {})
                child_env.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                                  "OMP_NUM_THREADS": child_env.get("OMP_NUM_THREADS", "1")})
                err = d / f"rank{rank}.err"
                with open(d / f"rank{rank}.out", "wb") as out, open(err, "wb") as errf:
                    proc = subprocess.Popen([sys.executable, "-m", "placement_runtime", "_worker", str(d)],
                                            stdout=out, stderr=errf, stdin=subprocess.DEVNULL, env=child_env)
                ranks.append(_Rank(rank, proc, err))
            while True:
                codes = [r.proc.poll() for r in ranks]
                failed = [r for r, c in zip(ranks, codes, strict=True) if c not in (None, 0)]
                if failed:
                    first = failed[0]
                    _stop(ranks)
                    raise RankFailure(
                        f"rank {first.rank} exited with status {first.proc.returncode} after "
                        f"{time.monotonic() - start:.1f} s; the check did not complete "
                        f"(world {world}, backend {backend}). Its stderr ends with:\n{_tail(first.stderr)}")
                if all(c == 0 for c in codes):
                    break
                if time.monotonic() > deadline:
                    waiting = [r.rank for r, c in zip(ranks, codes, strict=True) if c is None]
                    _stop(ranks)
                    raise RankFailure(
                        f"timed out after {timeout:g} s: rank(s) {waiting} still running (a rank hung or "
                        f"is waiting on one); the check did not complete (world {world}, backend {backend}). "
                        f"Rank {waiting[0]} stderr ends with:\n{_tail(ranks[waiting[0]].stderr)}")
                time.sleep(0.05)
        finally:
            _stop(ranks, grace=1.0)
        with open(d / _RESULT, "rb") as f:
            return pickle.load(f)


def _init(backend: str, rank: int, world: int, timeout: float, store=None):
    import torch
    import torch.distributed as dist

    kw = {"timeout": timedelta(seconds=float(timeout))}
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA GPUs; use --backend gloo on CPU")
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        kw["device_id"] = device
    else:
        device = torch.device("cpu")
    if store is not None:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, **kw)
    else:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, **kw)
    return device


def init_from_env(backend: str | None, timeout: float):
    """Join the group ``torchrun`` set up (``env://``); returns ``(rank, world, device, backend)``.

    ``backend=None`` picks NCCL when CUDA is available, else Gloo.
    """
    import torch

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = _init(backend, rank, world, timeout)
    return rank, world, device, backend


def worker_main(directory: str) -> int:
    """Entry of a spawned rank (``python -m placement_runtime _worker DIR``)."""
    import torch
    import torch.distributed as dist

    from .check import run_cases

    d = Path(directory)
    with open(d / _CONFIG, "rb") as f:
        job = pickle.load(f)
    config: CheckConfig = job["config"]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    store = dist.FileStore(str(d / _STORE), world)
    device = _init(job["backend"], rank, world, job["timeout"], store=store)
    try:
        apply_fault(rank)
        results = run_cases(config, rank, device=device, backend=job["backend"],
                            gather_output=job["gather_output"])
        dist.barrier()
        if rank == 0:
            tmp = d / (_RESULT + ".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(results, f)
            os.replace(tmp, d / _RESULT)
    finally:
        dist.destroy_process_group()
    return 0
