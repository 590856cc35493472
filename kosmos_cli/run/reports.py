"""What the command line reads of a summary, declared once for the commands that run as one process alone."""

from __future__ import annotations

from typing import ClassVar


class SoloReport:
    """A summary of `draw` or `export`: one process, no ranks, no pictures drawn beside it; `failed` images, and
    `unusable` lines or records of the results file (each warned, skipped and counted)."""

    rank: ClassVar[None] = None
    ranks: ClassVar[tuple] = ()
    drawing: ClassVar[None] = None
    warned: ClassVar[bool] = True  # each failure was warned as it came: the command line does not list it again
    failed: int
    unusable: int

    def strict_failure(self) -> str | None:
        """Why --strict fails the command: images that could not be handled, records that could not be used."""
        why = [f"{self.failed} image{'s' if self.failed != 1 else ''} failed"] if self.failed else []
        why += [f"{self.unusable} record{'s' if self.unusable != 1 else ''} unusable"] if self.unusable else []
        return ", ".join(why) or None

    def unusable_part(self) -> str:
        """ ", 2 unusable" for the summary line; nothing when every line was a usable record."""
        return f", {self.unusable} unusable" if self.unusable else ""
