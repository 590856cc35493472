"""The results file as it is now: one reading of it (`Opened`: its records, and the index over them built on a
thread of its own), read again once the file changed (`Current`).

The file is looked at (a stat) before each answer: once it changed (rewritten, cut short, a part added), it is
read again. When records were only added after the others, the version stays; otherwise it is one more, and
answers for the page's older version are refused (409) so the page reloads.
"""

from __future__ import annotations

import sys
import threading

from ..errors import InputError
from .index import Index
from .reading import Changed, Results, grown, open_results, signature


class Opened:
    """One reading of the results file: its records, the index over them (built on a thread of its own) and its
    version (1, then one more each time the file changed and was read again)."""

    def __init__(self, results: Results, version: int):
        self.results, self.version = results, version
        self._index: Index | None = None
        self._index_error: Exception | None = None
        self._indexed = threading.Event()
        threading.Thread(target=self._build_index, name="kosmos-view-index", daemon=True).start()

    def _build_index(self) -> None:
        try:
            self._index = Index(self.results)
            import pyarrow as pa

            pa.default_memory_pool().release_unused()  # what reading and building took, given back
        except Changed as exc:  # rewritten while it was read: the next request reads it again
            self._index_error = exc
        except Exception as exc:  # a damaged row group past the footer: said by each answer that needs it
            self._index_error = InputError(f"{self.results.path} cannot be read: {' '.join(str(exc).split())}")
        finally:
            self._indexed.set()

    @property
    def indexed(self) -> bool:
        return self._indexed.is_set()

    @property
    def index(self) -> Index:
        """The index over every record, once built (waits for it)."""
        self._indexed.wait()
        if self._index is None:
            assert self._index_error is not None
            raise self._index_error
        return self._index


class Current:
    """The results file `path`, as it is now (`get`). `quiet` False: a line on stderr when it changed and was read
    again."""

    def __init__(self, path: str, quiet: bool = True):
        self.path, self.quiet = path, quiet
        self._opened = Opened(open_results(path), 1)  # InputError before anything listens
        self._broken: tuple[tuple, str] | None = None  # a changed file that could not be read: its signature, why
        self._reading = threading.Lock()

    def get(self) -> Opened:
        """The results as they are now: read again when the file changed since it was read. Changed (one line)
        when it changed and cannot be read now (it is tried again once it changes again)."""
        opened = self._opened
        if signature(self.path) == opened.results.signature:
            return opened
        with self._reading:  # one reading at a time; the requests that noticed too wait for it
            opened = self._opened
            now = signature(self.path)
            if now == opened.results.signature:
                return opened
            if self._broken is not None and self._broken[0] == now:
                raise Changed(self._broken[1])
            try:
                results = open_results(self.path)
            except InputError as exc:
                why = f"{self.path} changed and cannot be read now: {exc}"
                self._broken = (now, why)
                self._say(why)
                raise Changed(why) from None
            self._broken = None
            try:
                appended = grown(opened.results, results)
            except Changed:  # changed again while it was compared: a new reading all the same
                appended = False
            # records added after the others: their numbers still name them, so the page goes on as it is
            self._opened = Opened(results, opened.version if appended else opened.version + 1)
            how = "grew" if appended else "changed"
            self._say(f"{self.path} {how}: read again, {len(results)} {results.task.name} records")
            return self._opened

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(f"kosmos view: {line}", file=sys.stderr, flush=True)
