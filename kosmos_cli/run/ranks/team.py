"""A single process as a team of one (`Solo`), and the processes of a launch (`Team`): rank 0 drives, the others answer.

`team.run(model, task, options, execute)` is this process's part in a run. Solo: `execute(model)`, the pipeline
over the output. On a team's rank 0: the same pipeline with `Spread(model)`, which hands every pending image to a
rank (by its index; a WebDataset shard whole, by its number) in rounds, answers rank 0's share here while the
others answer theirs, and yields their records as they come back; then one summary a rank. On the other ranks:
`serve(model)`, which answers what rank 0 sends until it says stop. Objects go over the team's gloo group
(`send_object_list`/`recv_object_list`, with the group's timeout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ...errors import Interrupted, RankError, UsageError
from ..batching import Answered, Pending
from ..pipeline import Model, Summary

ROUND = 4  # batches a rank answers between two exchanges with rank 0
WAIT = timedelta(minutes=30)  # torch's own default: how long a rank waits for the others to join or load
HINT = "; run the same command again to finish the rest"


@dataclass(frozen=True)
class Peer:
    """A process of the launch as the others know it: its rank, its pid and where that pid means something."""

    rank: int
    pid: int
    host: str
    space: str  # which processes can be looked up by this pid: the machine (host, boot) and the pid namespace

    @classmethod
    def me(cls, rank: int) -> Peer:
        return cls(rank, os.getpid(), socket.gethostname(), _pid_space())

    def gone(self) -> bool:
        """Whether its process has ended, as far as this machine can tell."""
        return self.space == _pid_space() and not _alive(self.pid)

    def ended(self, quiet: bool = False) -> RankError:
        return RankError(
            f"rank {self.rank} (pid {self.pid} on {self.host}) ended without finishing: see its messages{HINT}",
            self.rank,
            quiet=quiet,
        )


@dataclass
class Share:
    """What one rank answered of a run: rank 0 counts it as the records come back."""

    done: int = 0
    failed: int = 0
    seconds: float = 0.0


class Solo:
    """One process: a team of one. `rank`: a share picked by hand (runner.run). As the store sees it (Writers):
    the only process, so JSONL goes straight into the output, and everything it writes may be settled."""

    size, main, solo, merged = 1, True, True, True

    def __init__(self, rank: int = 0):
        self.rank = rank

    def run(self, model: Model, task: Any, options: Any, execute: Callable[[Model], Summary]) -> Summary:
        return execute(model)


class Team:
    """The processes of one launch, as this one (`rank`) sees them. `group`: the gloo group objects go over, with
    the stall timeout; `waits`: the gloo group of the barrier, with torch's default one."""

    solo = False

    def __init__(self, rank: int, size: int, group: Any, peers: list[Peer], stall: float, waits: Any = None):
        self.rank, self.size, self.group, self.peers, self.stall = rank, size, group, peers, stall
        self.waits = waits
        self.others = range(1, size)
        self.merged = False  # rank 0: every rank's share is answered, so the output may be settled
        self.shares = [Share() for _ in range(size)]  # rank 0: what each rank answered

    @property
    def main(self) -> bool:
        return self.rank == 0

    def run(self, model: Model, task: Any, options: Any, execute: Callable[[Model], Summary]) -> Summary:
        if not self.main:
            return self.serve(model, task, options)
        summary = execute(Spread(model, self))
        summary.world = self.size
        summary.ranks = [
            dataclasses.replace(
                summary, rank=r, done=s.done, failed=s.failed, skipped=0 if r else summary.skipped, seconds=s.seconds
            )
            for r, s in enumerate(self.shares)
        ]
        return summary

    def serve(self, model: Model, task: Any, options: Any) -> Summary:
        """Another rank: answer each share rank 0 sends, until it sends None."""
        summary = Summary(task=task.name, out=options.out, rank=self.rank, world=self.size)
        started = time.perf_counter()
        self.barrier()
        while (share := self.receive(0)) is not None:
            records = [r for batch in model.answered(iter(share), task, options) for r in batch.finish(task)]
            self.send(records, 0)
            summary.done += sum(r.ok for r in records)
            summary.failed += sum(not r.ok for r in records)
        summary.seconds = time.perf_counter() - started
        return summary

    # -- the wire ------------------------------------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every rank is here (its model loaded): as long as torch waits by default, not the stall."""
        import torch.distributed as dist

        try:
            dist.barrier(group=self.waits)
        except RuntimeError as exc:
            if "Timed out" in str(exc):
                raise RankError(
                    f"not every process of this launch was ready (its model loaded) within {WAIT.seconds // 60} "
                    f"minutes: see their messages{HINT}"
                ) from None
            raise self._lost(0 if not self.main else None, exc) from None

    def send(self, obj: Any, to: int) -> None:
        import torch.distributed as dist

        try:
            dist.send_object_list([obj], dst=to, group=self.group)
        except RuntimeError as exc:
            raise self._lost(to, exc) from None

    def receive(self, sender: int) -> Any:
        import torch.distributed as dist

        box: list[Any] = [None]
        try:
            dist.recv_object_list(box, src=sender, group=self.group)
        except RuntimeError as exc:
            raise self._lost(sender, exc) from None
        return box[0]

    def _lost(self, r: int | None, exc: RuntimeError) -> RankError:
        """The error of an exchange with rank `r` that failed: it timed out (hung), or its process is gone."""
        if r is None:
            r = next((p.rank for p in self.peers if p.rank != self.rank and p.gone()), None)
        if r is None:
            return RankError(f"the other processes of this launch stopped answering ({exc}){HINT}")
        if "Timed out" in str(exc):
            return RankError(
                f"rank {r} on {self.peers[r].host} has answered nothing for {self.stall:.0f}s although it is still "
                "running: it looks hung (a stuck GPU, driver or file system); set KOSMOS_STALL_TIMEOUT to wait "
                f"longer{HINT}",
                r,
            )
        # rank 0 gone on this machine: it said why, or the launcher says how it ended
        return self.peers[r].ended(quiet=r == 0 and self.peers[0].space == _pid_space())

    @contextlib.contextmanager
    def stopping(self) -> Iterator[Team]:
        """Say how this rank's run ended: rank 0 speaks for the run; stopped by the launcher (SIGTERM) after a rank
        died, it names that rank. The others stay quiet about what rank 0 says too."""
        try:
            yield self
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            if not self.main:
                raise Interrupted(signum, quiet=True) from None
            dead = next((p for p in self.peers[1:] if p.gone()), None) if signum == signal.SIGTERM else None
            if dead is not None:
                raise dead.ended() from None
            raise
        except UsageError as exc:
            exc.quiet = exc.quiet or not self.main  # the same on every rank: rank 0 says it
            raise


@dataclass
class Spread:
    """Rank 0's model: the pending images in rounds, each to its rank; rank 0's share answered here."""

    here: Model
    team: Team

    @property
    def options(self) -> Any:
        return self.here.options

    @property
    def generation(self) -> Any:
        return self.here.generation

    @property
    def decoding(self) -> str:
        return self.here.decoding

    def batch_size(self, given: int | None = None) -> int:
        return self.here.batch_size(given)

    def answered(self, pending: Pending, task: Any, options: Any) -> Iterator[Answered]:
        team = self.team
        team.barrier()
        started = time.perf_counter()
        for shares in _rounds(pending, team.size, self.batch_size(options.batch_size) * ROUND):
            for r in team.others:
                team.send(shares[r], r)
            for batch in self.here.answered(iter(shares[0]), task, options):
                yield self._counted(0, batch.finish(task), started)
            for r in team.others:
                yield self._counted(r, team.receive(r), started)
        for r in team.others:
            team.send(None, r)
        team.merged = True

    def _counted(self, rank: int, records: list, started: float) -> Answered:
        share = self.team.shares[rank]
        share.done += sum(r.ok for r in records)
        share.failed += sum(not r.ok for r in records)
        share.seconds = time.perf_counter() - started
        return Answered(records=records)


def _rounds(pending: Pending, size: int, units: int) -> Iterator[list[list]]:
    """The pending images, one list a rank, each round until one rank's list holds `units` units. Image i goes to
    rank i % size; a WebDataset shard's samples go whole to the rank of the shard's number."""
    shares: list[list] = [[] for _ in range(size)]
    counts = [0] * size
    for index, (item, todo) in enumerate(pending):
        r = (item.group if item.group is not None else index) % size
        shares[r].append((item, todo))
        counts[r] += len(todo)
        if counts[r] >= units:
            yield shares
            shares, counts = [[] for _ in range(size)], [0] * size
    if any(shares):
        yield shares


def _pid_space() -> str:
    """Which processes this one can see by pid: its machine (host, boot) and its pid namespace."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has ended
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
