"""The errors the library raises. Every message says what to do next.

The CLI turns these into one line on stderr and an exit code, in one place (cli/output.py). What an error carries
beyond its message is declared here: `quiet` (another process of the run says it), `rank` (which process it
names), `param` (the library parameter a usage error is about; the CLI names its flag instead).

No message carries a URL's credentials: `redact` leaves them out of every error raised here, every line the CLI
prints and every record's `error` (tasks/records.py `printable`), and every log line (`redact_log`, a filter on the
`kosmos_cli` logger).
"""

from __future__ import annotations

import errno
import logging
import re
import signal

_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*@")  # scheme://user:password@ (to its last @)
_TOKENS = re.compile(  # query parameters that carry a secret: a presigned URL's signature, an API key or token
    r"([?&](?:x-amz-(?:signature|credential|security-token)|x-goog-(?:signature|credential)|signature|sig|token"
    r"|access_token|api_key|apikey|key|password)=)[^&\s#'\"]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`: `https://user:pass@host/x` ->
    `https://***@host/x`, `?X-Amz-Signature=abc` -> `?X-Amz-Signature=***`. Messages, log lines and error fields
    never carry them; a record's `path` keeps the URL as the user gave it."""
    if "@" in text:
        text = _USERINFO.sub(r"\1***@", text)
    if "=" in text:
        text = _TOKENS.sub(r"\1***", text)
    return text


def redact_log(record: logging.LogRecord) -> bool:
    """A logging filter (on the `kosmos_cli` logger): a log line with credentials in it is written without them,
    whoever's handler writes it."""
    message = record.getMessage()
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    return True


class KosmosError(Exception):
    """Base class. `exit_code` is what the CLI exits with: 1 unless a subclass says otherwise."""

    exit_code = 1

    def __init__(self, message: str = "", *, quiet: bool = False):
        super().__init__(redact(message))
        self.quiet = quiet  # True: the same error is said by another process of the run (rank 0)


class UsageError(KosmosError):
    """The call itself is wrong: a missing input, an unknown format, a bad value.

    A message about one parameter writes it as `{param}`: the library says the parameter's name (batch_size),
    the CLI its flag (--batch-size), through `render`.
    """

    exit_code = 2

    def __init__(self, message: str, param: str | None = None, *, quiet: bool = False):
        self.template, self.param = redact(message), param
        super().__init__(self.render(param), quiet=quiet)

    def render(self, name: str | None) -> str:
        return self.template.replace("{param}", name) if name else self.template


class InputError(KosmosError):
    """An input (manifest, results file, box) cannot be used."""

    exit_code = 2


class ModelError(KosmosError):
    """The model or processor cannot be loaded or run."""


class OutOfMemory(ModelError):
    """Even one request does not fit in the device's memory: the pipeline writes its batch's records as errors."""


class ClusterError(KosmosError):
    """The cluster a run was sent to (--on ray) cannot be reached, or lost the run."""


class OutputError(KosmosError):
    """The output cannot be written (full disk, permissions, a damaged results file)."""


class LockedError(OutputError):
    """Another run holds the lock on this output."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RankError(KosmosError):
    """Another process of a multi-process run failed; `rank` is that process."""

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
