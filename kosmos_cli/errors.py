"""The errors the library raises. Every message says what to do next.

The CLI turns these into one line on stderr and an exit code, in one place (cli.py).
"""

from __future__ import annotations


class KosmosError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(KosmosError):
    """The command line itself is wrong: a missing input, an unknown format, a bad value."""

    exit_code = 2


class InputError(KosmosError):
    """An input (manifest, results file, box) cannot be used."""

    exit_code = 2


class ModelError(KosmosError):
    """The model or processor cannot be loaded or run."""

    exit_code = 1


class OutputError(KosmosError):
    """The output cannot be written (full disk, permissions, a damaged results file)."""

    exit_code = 1


class LockedError(OutputError):
    """Another run holds the lock on this output."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RankError(KosmosError):
    """Another process of a multi-process run failed."""

    exit_code = 1
