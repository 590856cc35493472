"""Several processes, one result: each rank's share, its device, and how the ranks wait for each other.

Started by `accelerate launch` or `torchrun` (WORLD_SIZE > 1 in the environment), every process runs the same
command. `team()` is the one way in: this process's `Team`, or a `Solo` team of one when no launcher started
several. The pipeline gives each rank every WORLD_SIZE-th input from its rank (sources.shard, by index over the
full input order, before done images are skipped), a model copy on its own device (cuda:LOCAL_RANK, or the CPU),
and its own parts beside the output; rank 0 folds the parts into the one output named by --out.

The ranks coordinate through small status files beside the output, in `<out>.ranks/` (status.py), so every
machine must see the output's folder (a shared filesystem). The only collective call is one broadcast when the
team forms, which gives every rank the run's id, so that files of an earlier run are never taken for this one's:

- each rank keeps its status file fresh from a background thread: its state, its counts and a heartbeat;
- rank 0 alone takes the output's lock and removes (--overwrite) or folds in leftovers; the others wait for its
  status to say "running" before they read what is already done;
- a rank whose share is done says "done"; rank 0 waits for every rank to say so, then folds the parts in;
- a rank that fails says "failed"; one that vanishes is seen by its process being gone (on the same machine) or
  by its heartbeat stopping for KOSMOS_RANK_TIMEOUT seconds (default 300); one that is alive but hung (its
  heartbeat goes on, its counts do not) by recording nothing while running for KOSMOS_STALL_TIMEOUT seconds
  (default 1800, 0: never). The ranks that depend on it (rank 0 watches all, the others watch rank 0) stop at
  their next batch with a RankError that names it (watchdog.py).

accelerate and torch.distributed are imported here only when WORLD_SIZE > 1.
"""

from __future__ import annotations

import os
import uuid

from ...errors import RankError, UsageError
from ...tasks.records import one_line
from .status import LOADING, PREPARING, WAITING
from .team import Solo, Team
from .watchdog import DONE, FAILED, INTERRUPTED, RUNNING, STALL_ENV, TIMEOUT_ENV

DEFAULT_TIMEOUT = 300.0
DEFAULT_STALL = 1800.0  # a running rank that records nothing for this long is taken for hung (0: never)

_team: Team | Solo | None = None


def world_size() -> int:
    """How many processes the launcher started (WORLD_SIZE), 1 when none says."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE") or 1))
    except ValueError:
        return 1


def team(device: str = "auto") -> Team | Solo:
    """This process's team: joined once, the first time it is asked for; a `Solo` one when WORLD_SIZE <= 1.

    `device`: what the command asked for. "cpu" runs the ranks on the CPU (gloo); "cuda:N" on CUDA; otherwise
    on the CPU only when CUDA is not available.
    """
    global _team
    if world_size() <= 1:
        return Solo()
    if _team is None:
        cpu = True if device == "cpu" else (False if device.startswith("cuda:") else None)
        _team = _join(cpu)
    return _team


def new_team(
    rank: int,
    size: int,
    local_rank: int,
    device: str,
    run: str,
    timeout: float | None = None,
    stall: float | None = None,
) -> Team:
    """A Team with its timeouts from the environment (KOSMOS_RANK_TIMEOUT, KOSMOS_STALL_TIMEOUT) unless given."""
    timeout = _seconds_from(TIMEOUT_ENV, DEFAULT_TIMEOUT) if timeout is None else timeout
    stall = _seconds_from(STALL_ENV, DEFAULT_STALL) if stall is None else stall
    return Team(rank, size, local_rank, device, run, timeout, stall)


def _join(cpu: bool | None) -> Team | Solo:
    import torch
    from accelerate import PartialState

    if cpu is None:
        cpu = not torch.cuda.is_available()
    try:
        state = PartialState(cpu=cpu)
    except (RuntimeError, ValueError) as exc:
        raise RankError(
            f"cannot join the other processes of this launch ({one_line(str(exc))}): start the "
            "command with accelerate launch or torchrun"
        ) from None
    if state.num_processes <= 1:
        return Solo()
    box = [uuid.uuid4().hex[:12] if state.process_index == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    return new_team(state.process_index, state.num_processes, state.local_process_index, device, str(box[0]))


def _seconds_from(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value else default
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise UsageError(f"{name}={value!r}: give a number of seconds")
    return seconds


__all__ = [
    "DONE",
    "FAILED",
    "INTERRUPTED",
    "LOADING",
    "PREPARING",
    "RUNNING",
    "WAITING",
    "Solo",
    "Team",
    "new_team",
    "team",
    "world_size",
]
