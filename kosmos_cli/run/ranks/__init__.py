"""The processes of one launch (torchrun, `accelerate launch`): rank 0 owns the output, the others answer its units.

`team()` is the one way in: this process's `Team` for one run, or a `Solo` team of one when no launcher started
several. Rank 0 lists the inputs, skips what the output holds and writes every record, as a single process does;
it sends the other ranks their shares of the pending units and receives their answered records back, as Python
objects over a gloo process group (team.py). Only rank 0 touches the output, so the machines need not share a
filesystem for it (each rank reads the images it is sent, by path, or their bytes sent with them).

The group's timeout is the stall timeout: a rank that answers nothing for KOSMOS_STALL_TIMEOUT seconds (default
1800; 0: never) ends the run, named. Loading the model takes what it takes: a barrier with torch's own default
timeout waits for every rank to load it first. A rank that dies ends the launch as torchrun ends it (it stops the
others); rank 0 names it. Every group is torn down when the run ends, so no communicator is left open.
torch.distributed is imported here only when WORLD_SIZE > 1.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from datetime import timedelta

from ...errors import RankError, UsageError
from ...tasks.records import one_line
from .team import WAIT, Peer, Solo, Team

STALL_ENV = "KOSMOS_STALL_TIMEOUT"
DEFAULT_STALL = 1800.0  # seconds a rank may answer nothing, once every model is loaded (0: never)
NEVER = timedelta(days=365)
_runs = itertools.count()  # the runs this process has joined: each one's groups rendezvous under keys of their own


def world_size() -> int:
    """How many processes the launcher started (WORLD_SIZE), 1 when none says."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE") or 1))
    except ValueError:
        return 1


def device_for(device: str) -> str:
    """`--device auto` (or a bare `cuda`) under a launcher: this rank's own device, cuda:LOCAL_RANK or cpu."""
    if world_size() <= 1 or device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu" if device == "auto" else device
    return f"cuda:{int(os.environ.get('LOCAL_RANK') or 0)}"


@contextlib.contextmanager
def team() -> Iterator[Team | Solo]:
    """This process's team for one run: joined now, torn down when the run ends; a `Solo` one when WORLD_SIZE <= 1.

    The default group is ours only when nobody made one before (a script that did keeps its own, NCCL or not).
    """
    if world_size() <= 1:
        yield Solo()
        return
    import torch.distributed as dist

    stall = stall_timeout()
    ours = not dist.is_initialized()
    try:
        if ours:  # env://: the launcher set RANK, WORLD_SIZE, MASTER_ADDR and _PORT; a run's own keys in its store
            store, rank, size = next(dist.rendezvous("env://", timeout=WAIT))
            runs = next(_runs)
            keys = dist.PrefixStore(f"kosmos-run-{runs}", store)
            dist.init_process_group("gloo", store=keys, rank=rank, world_size=size, timeout=WAIT)
        waits = dist.new_group(backend="gloo", timeout=WAIT)  # for the others to join, and to load their models
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=stall) if stall else NEVER)
    except (RuntimeError, ValueError) as exc:
        raise RankError(
            f"cannot join the other processes of this launch ({one_line(str(exc))}): start the command with "
            "accelerate launch or torchrun"
        ) from None
    try:
        rank, size = dist.get_rank(), dist.get_world_size()
        peers: list = [None] * size
        dist.all_gather_object(peers, Peer.me(rank), group=waits)
        with Team(rank, size, group, peers, stall, waits).stopping() as joined:
            yield joined
    finally:
        dist.destroy_process_group(group)
        dist.destroy_process_group(waits)
        if ours:
            dist.destroy_process_group()


def stall_timeout() -> float:
    value = os.environ.get(STALL_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_STALL
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise UsageError(f"{STALL_ENV}={value!r}: give a number of seconds")
    return seconds


__all__ = ["Solo", "Team", "device_for", "stall_timeout", "team", "world_size"]
