"""What the command line reads of a summary, declared once for the commands that run as one process alone."""

from __future__ import annotations

from typing import ClassVar


class SoloReport:
    """A summary of `draw` or `export`: one process, no ranks, no pictures drawn beside it; `failed` images."""

    rank: ClassVar[None] = None
    ranks: ClassVar[tuple] = ()
    drawing: ClassVar[None] = None
    failed: int

    def strict_failure(self) -> str | None:
        """Why --strict fails the command: images that could not be handled."""
        return f"{self.failed} image{'s' if self.failed != 1 else ''} failed" if self.failed else None
