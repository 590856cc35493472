"""Several processes, one result: each rank's share, its device, and how the ranks wait for each other.

Started by `accelerate launch` or `torchrun` (WORLD_SIZE > 1 in the environment), every process runs the same
command. `pipeline.run` then gives each one every WORLD_SIZE-th input from its rank (sources.shard, by index over
the full input order, before done images are skipped), a model copy on its own device (cuda:LOCAL_RANK, or the
CPU), and its own parts beside the output; rank 0 folds the parts into the one output named by --out.

The ranks coordinate through small status files beside the output, in `<out>.ranks/`, so every machine must see
the output's folder (a shared filesystem). The only collective call is one broadcast when the team forms, which
gives every rank the run's id, so that files of an earlier run are never taken for this one's:

- each rank keeps its status file fresh from a background thread: its state, its counts and a heartbeat;
- rank 0 alone takes the output's lock and removes (--overwrite) or folds in leftovers; the others wait for its
  status to say "running" before they read what is already done;
- a rank whose share is done says "done"; rank 0 waits for every rank to say so, then folds the parts in;
- a rank that fails says "failed"; one that vanishes is seen by its process being gone (on the same machine) or
  by its heartbeat stopping for KOSMOS_RANK_TIMEOUT seconds (default 300); one that is alive but hung (its
  heartbeat goes on, its counts do not) by recording nothing while running for KOSMOS_STALL_TIMEOUT seconds
  (default 1800, 0: never). The ranks that depend on it (rank 0 watches all, the others watch rank 0) stop at
  their next batch with a RankError that names it.

accelerate and torch.distributed are imported here only when WORLD_SIZE > 1.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from .errors import Interrupted, KosmosError, OutputError, RankError, UsageError
from .records import one_line

log = logging.getLogger("kosmos_cli")

TIMEOUT_ENV = "KOSMOS_RANK_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
STALL_ENV = "KOSMOS_STALL_TIMEOUT"
DEFAULT_STALL = 1800.0  # a running rank that records nothing for this long is taken for hung (0: never)
POLL = 0.2  # seconds between looks at the other ranks while waiting for them

LOADING, PREPARING, WAITING, RUNNING, DONE, FAILED, INTERRUPTED = (
    "loading", "preparing", "waiting", "running", "done", "failed", "interrupted")

_team: Team | None = None
_joined = False


def world_size() -> int:
    """How many processes the launcher started (WORLD_SIZE), 1 when none says."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE") or 1))
    except ValueError:
        return 1


def detect(cpu: bool | None = None) -> Team | None:
    """This process's team when a launcher started several (WORLD_SIZE > 1), else None. Joins it once.

    `cpu`: run the ranks on the CPU (gloo); None: on the CPU only when CUDA is not available.
    """
    global _team, _joined
    if world_size() <= 1:
        return None
    if not _joined:
        _team, _joined = _join(cpu), True
    return _team


def join(out: str, device: str = "auto") -> Team | None:
    """Join the team now and start this rank's status beside `out`: before the model loads, which takes a while."""
    if world_size() <= 1:
        return None
    team = detect(cpu=True if device == "cpu" else None)
    if team is not None:
        team.start(out)
    return team


def device_for(device: str) -> str:
    """`--device auto` (or a bare `cuda`) in a multi-process run: this rank's own device, cuda:LOCAL_RANK or cpu."""
    if world_size() <= 1:
        return device
    team = detect(cpu=True if device == "cpu" else (False if device.startswith("cuda:") else None))
    if team is None:
        return device
    if device == "auto" or (device == "cuda" and team.device.startswith("cuda")):
        return team.device
    return device


def _join(cpu: bool | None) -> Team | None:
    import torch
    from accelerate import PartialState

    if cpu is None:
        cpu = not torch.cuda.is_available()
    try:
        state = PartialState(cpu=cpu)
    except (RuntimeError, ValueError) as exc:
        raise RankError(f"cannot join the other processes of this launch ({one_line(str(exc))}): start the "
                        "command with accelerate launch or torchrun") from None
    if state.num_processes <= 1:
        return None
    box = [uuid.uuid4().hex[:12] if state.process_index == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    return Team(state.process_index, state.num_processes, state.local_process_index, device, box[0])


def _seconds_from(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value else default
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise UsageError(f"{name}={value!r}: give a number of seconds")
    return seconds


def _timeout() -> float:
    return _seconds_from(TIMEOUT_ENV, DEFAULT_TIMEOUT)


class Team:
    """The processes of one launch, as this one (`rank`) sees them."""

    def __init__(self, rank: int, size: int, local_rank: int, device: str, run: str, timeout: float | None = None,
                 stall: float | None = None):
        self.rank, self.size, self.local_rank, self.device, self.run = rank, size, local_rank, device, run
        self.timeout = _timeout() if timeout is None else timeout
        self.stall = _seconds_from(STALL_ENV, DEFAULT_STALL) if stall is None else stall
        self.beat = max(0.1, min(2.0, self.timeout / 5))
        self.host = socket.gethostname()
        self.space = _pid_space()
        self.output: str | None = None  # the file the ranks write (a spool file when the user's --out is -)
        self.folder: str | None = None  # where the status files are
        self.merged = False  # rank 0: every rank is done and counted in
        self.problem: RankError | None = None  # a failed or vanished rank this one depends on
        self._sessions = 0
        self._tag = run
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tally: _Tally | None = None
        self._reset()
        atexit.register(self._at_exit)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def output_for(self, out: str) -> str:
        """Where the ranks write: `out`, or for `-` a spool file here that rank 0 copies to stdout at the end."""
        return f".kosmos-stdout-{self.run}.jsonl" if out == "-" else out

    # -- a run's life ------------------------------------------------------------------------------------
    def start(self, out: str) -> None:
        """Begin this rank's status file for a run on `out`, and its heartbeat (once per run)."""
        output = self.output_for(out)
        if self.output == output and self._thread is not None:
            return
        self._stop_beating()
        self._reset()
        self._sessions += 1
        self._tag = f"{self.run}-{self._sessions}"
        self.output, self.folder = output, output + ".ranks"
        self._since = time.monotonic()
        try:
            os.makedirs(self.folder, exist_ok=True)
            self._publish(strict=True)
        except OSError as exc:
            raise OutputError(f"cannot write {self.folder} ({exc.strerror or exc}): every process needs to write "
                              "beside the output; choose another --out") from None
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="kosmos-rank-status", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def session(self, out: str) -> Iterator[Team]:
        """One run on `out`: marks this rank failed or interrupted if it ends so, and tidies up after."""
        self.start(out)
        self._t0 = time.perf_counter()
        self._set(PREPARING if self.main else WAITING)
        try:
            yield self
        except BaseException as exc:
            outcome = self._outcome(exc)
            if outcome is exc:
                raise
            raise outcome from None
        else:
            if self.main:
                self._stop_beating()
                self._emit(out)
                self._clean()
        finally:
            self.close()
            if self.main and out == "-":
                _remove_spool(self.output_for(out))

    def _outcome(self, exc: BaseException) -> BaseException:
        """Say how this rank's run ended. Returns what to raise: `exc`, or the RankError of the rank that
        caused it (a launcher stops every rank when one of them dies)."""
        try:
            if isinstance(exc, KeyboardInterrupt):
                self._end(INTERRUPTED, "interrupted")
                culprit = self.problem or self._culprit()
                if culprit is not None:
                    return culprit
                signum = getattr(exc, "signum", signal.SIGINT)
                return Interrupted(signum, quiet=not self.main)  # rank 0 says it for all
            self._end(FAILED, str(exc) if isinstance(exc, KosmosError) else _describe(exc))
            if isinstance(exc, UsageError) and not self.main:
                exc.quiet = True  # the same on every rank: rank 0 says it
            return exc
        except KeyboardInterrupt:  # stopped by the launcher while already stopping: the first reason stands
            return self.problem or exc

    def ready(self) -> None:
        """Rank 0: the output is prepared (locked, leftovers folded in). The others: wait until it is."""
        if self.main:
            self._forget_old_runs()
            self._t0 = time.perf_counter()
            self._set(RUNNING)
            return
        while True:
            self._watch()
            self.check()
            status = self._others.get(0)
            if status is not None and status.get("state") in (RUNNING, DONE):
                break
            time.sleep(POLL)
        self._t0 = time.perf_counter()  # this rank's own time starts now
        self._set(RUNNING)

    def check(self) -> None:
        """Raise the RankError of a failed or vanished rank this one depends on (between batches)."""
        if self.problem is not None:
            raise self.problem

    def finish(self, summary) -> None:
        """This rank's share is done. Rank 0 waits for every other rank, then counts their records in `summary`."""
        with self._lock:
            self._counts = (summary.done, summary.failed, summary.skipped)
            self._failures = list(summary.failures[:5])
            self._seconds = time.perf_counter() - self._t0
        if not self.main:
            self._end(DONE)
            summary.rank, summary.world = self.rank, self.size
            return
        self._set(DONE)
        others = range(1, self.size)
        while True:
            self._watch()
            self.check()
            if all(self._others.get(r, {}).get("state") == DONE for r in others):
                break
            if self._tally is not None:
                self._tally.refresh()
            time.sleep(POLL)
        own = dataclasses.replace(summary, rank=0, world=self.size, seconds=self._seconds, failures=[], ranks=[])
        summary.ranks = [own]
        for r in others:
            status = self._others[r]
            part = dataclasses.replace(
                own, rank=r, done=status.get("done", 0), failed=status.get("failed", 0),
                skipped=status.get("skipped", 0), seconds=status.get("seconds", 0.0))
            summary.ranks.append(part)
            summary.done += part.done
            summary.failed += part.failed
            summary.skipped += part.skipped
            summary.failures += status.get("failures") or []
        summary.world = self.size
        if self._tally is not None:
            self._tally.refresh()
        self.merged = True

    def progress(self, inner=None) -> _Tally:
        """The pipeline's progress: counts this rank's work for its status; rank 0's shows every rank's."""
        self._tally = _Tally(self, inner)
        return self._tally

    def totals(self) -> tuple[int, int, int]:
        """done, failed, skipped of every rank, as last reported."""
        with self._lock:
            done, failed, skipped = self._counts
            for r, status in self._others.items():
                if r != self.rank:
                    done += status.get("done", 0)
                    failed += status.get("failed", 0)
                    skipped += status.get("skipped", 0)
        return done, failed, skipped

    # -- status files ------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.state, self.error = LOADING, None
        self.merged, self.problem = False, None
        self._counts, self._failures, self._seconds = (0, 0, 0), [], 0.0
        self._beats = 0
        self._others: dict[int, dict] = {}
        self._changed: dict[int, tuple[object, float]] = {}
        self._progressed: dict[int, tuple[object, float]] = {}
        self._since = time.monotonic()
        self._t0 = time.perf_counter()

    def _status_path(self, rank: int) -> str:
        return os.path.join(self.folder, f"{self._tag}.rank-{rank:05d}.json")

    def _set(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self.state, self.error = state, error
        self._publish()

    def _count(self, done: int, failed: int, skipped: int) -> None:
        with self._lock:
            self._counts = (done, failed, skipped)

    def _publish(self, strict: bool = False) -> None:
        if self.folder is None:
            return
        with self._lock:
            self._beats += 1
            done, failed, skipped = self._counts
            status = {
                "run": self._tag, "rank": self.rank, "world": self.size, "host": self.host, "space": self.space,
                "pid": os.getpid(), "state": self.state, "error": self.error, "beat": self._beats,
                "done": done, "failed": failed, "skipped": skipped, "seconds": round(self._seconds, 3),
                "failures": self._failures,
            }
            path = self._status_path(self.rank)
            tmp = f"{path}.{os.getpid()}~"  # renamed into place: a reader never sees half a status
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(status, f)
                os.replace(tmp, path)
            except OSError as exc:
                if strict:
                    raise
                log.debug("cannot write %s: %s", path, exc)

    def _read(self, rank: int) -> dict | None:
        try:
            with open(self._status_path(rank), encoding="utf-8") as f:
                status = json.load(f)
        except (OSError, ValueError):
            return None
        return status if isinstance(status, dict) and status.get("run") == self._tag else None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat):
            self._publish()
            self._watch()

    def close(self) -> None:
        """Stop this rank's heartbeat; its status file stays as it last said."""
        self._stop_beating()
        self.output = None

    def _stop_beating(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _end(self, state: str, error: str | None = None) -> None:
        self._stop_beating()
        with self._lock:
            if self.state in (FAILED, INTERRUPTED):
                return  # the first word stands
        self._set(state, error)

    def _at_exit(self) -> None:
        """The process ends before its run did (an error before the run, sys.exit): say so to the others."""
        if self.output is not None and self.state not in (DONE, FAILED, INTERRUPTED):
            self._stop_beating()
            self._set(FAILED, "stopped before finishing: see its messages")

    # -- watching the others -------------------------------------------------------------------------------
    def _watched(self) -> range | list[int]:
        return range(1, self.size) if self.main else [0]

    def _watch(self) -> None:
        """Read the status of the ranks this one depends on; note a failed or vanished one in `problem`."""
        if self.folder is None:
            return
        for r in self._watched():
            status = self._read(r)
            now = time.monotonic()
            with self._lock:
                if status is not None:
                    self._others[r] = status
                problem = self._diagnose(r, self._others.get(r), now)
                if problem is not None and self.problem is None:
                    self.problem = problem

    def _diagnose(self, r: int, status: dict | None, now: float, waited: bool = True) -> RankError | None:
        """What is wrong with rank `r`, given its last status; None while it is fine (or done)."""
        if status is None:
            if waited and now - self._since > self.timeout:
                return self._error(r, f"rank {r} has not reported for {self.timeout:.0f}s: it did not start, or "
                                      f"cannot see {self.folder} (every machine must share the output's folder)")
            return None
        state = status.get("state")
        if state == DONE:
            return None
        if state == FAILED:
            return self._error(r, f"rank {r} failed: {status.get('error') or 'see its messages'}", said=True)
        if state == INTERRUPTED:
            return self._error(r, f"rank {r} was interrupted", said=True)
        pid = status.get("pid")
        if status.get("space") == self.space and not _alive(pid):
            return self._error(r, f"rank {r} (pid {pid} on {status.get('host')}) ended without finishing: "
                                  "see its messages")
        if not waited:
            return None
        beat, seen = status.get("beat"), self._changed.get(r)
        if seen is None or seen[0] != beat:
            self._changed[r] = (beat, now)
        elif now - seen[1] > self.timeout:
            return self._error(r, f"rank {r} on {status.get('host')} stopped responding: no heartbeat for "
                                  f"{self.timeout:.0f}s (set {TIMEOUT_ENV} to wait longer)")
        return self._stalled(r, status, now)

    def _stalled(self, r: int, status: dict, now: float) -> RankError | None:
        """A rank that is alive and running but has recorded nothing for `stall` seconds: hung on its device or
        its file system. Only while running: loading a model (maybe downloading it) takes what it takes."""
        work = (status.get("state"), status.get("done"), status.get("failed"), status.get("skipped"))
        seen = self._progressed.get(r)
        if seen is None or seen[0] != work:
            self._progressed[r] = (work, now)
            return None
        if work[0] == RUNNING and self.stall and now - seen[1] > self.stall:
            return self._error(r, f"rank {r} on {status.get('host')} has recorded nothing for {self.stall:.0f}s "
                                  "although it is still running: it looks hung (a stuck GPU, driver or file "
                                  f"system); set {STALL_ENV} to wait longer")
        return None

    def _error(self, r: int, message: str, said: bool = False) -> RankError:
        hint = "; run the same command again to finish the rest" if self.main else ""
        # rank 0 speaks for the run; another rank only when rank 0 vanished without a word
        return RankError(message + hint, r, quiet=not self.main and (r != 0 or said))

    def _culprit(self) -> RankError | None:
        """After being stopped: the rank that failed or vanished first, if any did (read once, no waiting)."""
        if self.folder is None:
            return None
        for r in range(self.size):
            if r != self.rank:
                problem = self._diagnose(r, self._read(r) or self._others.get(r), time.monotonic(), waited=False)
                if problem is not None and not str(problem).startswith(f"rank {r} was interrupted"):
                    return problem
        return None

    # -- after a run ---------------------------------------------------------------------------------------
    def _emit(self, out: str) -> None:
        """`--out -`: copy the merged records to stdout."""
        if out != "-":
            return
        try:
            with open(self.output_for(out), encoding="utf-8") as f:
                for chunk in iter(lambda: f.read(1 << 20), ""):
                    sys.stdout.write(chunk)
        except FileNotFoundError:
            pass  # nothing was written
        sys.stdout.flush()

    def _clean(self) -> None:
        """Rank 0, after a complete run: this run's status files (every rank is done with them)."""
        for r in range(self.size):
            _unlink(self._status_path(r))
        with contextlib.suppress(OSError):
            os.rmdir(self.folder)

    def _forget_old_runs(self) -> None:
        """Rank 0, holding the output's lock: status files of earlier runs on this output."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.folder):
                if not name.startswith(self._tag + "."):
                    _unlink(os.path.join(self.folder, name))


class _Tally:
    """What the pipeline reports: this rank's counts go to its status; rank 0 shows the sums of every rank."""

    def __init__(self, team: Team, inner):
        self.team, self.inner = team, inner if team.main else None
        self.live = getattr(self.inner, "live", False)

    def start(self, total: int | None) -> None:
        if self.inner is not None:
            self.inner.start(total)

    def advance(self, done: int, failed: int, skipped: int) -> None:
        self.team._count(done, failed, skipped)
        self.refresh()

    def refresh(self) -> None:
        if self.inner is not None:
            self.inner.advance(*self.team.totals())

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def _describe(exc: BaseException) -> str:
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pid_space() -> str:
    """Which processes this one can see by pid: its machine (host, boot) and its pid namespace."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")  # a zombie has ended; its parent has not looked yet
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_spool(path: str) -> None:
    for leftover in (path, path + ".lock"):
        _unlink(leftover)
    with contextlib.suppress(OSError):
        os.rmdir(path + ".parts")


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
