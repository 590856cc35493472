"""The errors the library raises. Every message says what to do next.

The CLI turns these into one line on stderr and an exit code, in one place (cli.py). What an error carries
beyond its message is declared here: `quiet` (another process of the run says it), `rank` (which process it
names), `param` (the library parameter a usage error is about; the CLI names its flag instead).
"""

from __future__ import annotations

import errno
import signal


class KosmosError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str = "", *, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet  # True: the same error is said by another process of the run (rank 0)


class UsageError(KosmosError):
    """The call itself is wrong: a missing input, an unknown format, a bad value.

    A message about one parameter writes it as `{param}`: the library says the parameter's name (batch_size),
    the CLI its flag (--batch-size), through `render`.
    """

    exit_code = 2

    def __init__(self, message: str, param: str | None = None, *, quiet: bool = False):
        self.template, self.param = message, param
        super().__init__(self.render(param), quiet=quiet)

    def render(self, name: str | None) -> str:
        return self.template.replace("{param}", name) if name else self.template


class InputError(KosmosError):
    """An input (manifest, results file, box) cannot be used."""

    exit_code = 2


class ModelError(KosmosError):
    """The model or processor cannot be loaded or run."""

    exit_code = 1


class OutOfMemory(ModelError):
    """Even one request does not fit in the device's memory: the pipeline writes its batch's records as errors."""


class ClusterError(KosmosError):
    """The cluster a run was sent to (--on ray) cannot be reached, or lost the run."""

    exit_code = 1


class OutputError(KosmosError):
    """The output cannot be written (full disk, permissions, a damaged results file)."""

    exit_code = 1


class LockedError(OutputError):
    """Another run holds the lock on this output."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RankError(KosmosError):
    """Another process of a multi-process run failed; `rank` is that process."""

    exit_code = 1

    def __init__(self, message: str, rank: int | None = None, *, quiet: bool = False):
        super().__init__(message, quiet=quiet)
        self.rank = rank


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: finished batches are kept, the output stays valid. Exit 128 + signum.

    `advice`: what the CLI says after the signal's name, what the interrupted command leaves and what to do next;
    a command that leaves something else (an export) raises it again with its own (`during`)."""

    advice = "finished batches are kept; run the same command again to finish"

    def __init__(self, signum: int = signal.SIGINT, *, quiet: bool = False, advice: str | None = None):
        super().__init__(signum)
        self.signum, self.quiet = signum, quiet
        if advice is not None:
            self.advice = advice

    @classmethod
    def during(cls, exc: KeyboardInterrupt, advice: str) -> Interrupted:
        """`exc` (Ctrl-C, or an Interrupted by a signal) with `advice` instead of a run's."""
        if isinstance(exc, Interrupted):
            return cls(exc.signum, quiet=exc.quiet, advice=advice)
        return cls(advice=advice)


def disk_error(exc: OSError, path: str) -> OutputError:
    """One line for a failed write; ENOSPC and quota get their own advice."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(
            f"no space left writing {path}: free some space and run the same command again "
            "(finished records are kept and will be skipped)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: {exc.strerror}: choose another --out or fix its permissions")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")
