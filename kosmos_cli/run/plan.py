"""--dry-run: what a run would do, found as the run finds it, with no model and nothing written.

The inputs are listed and checked as a run lists them (pipeline.as_items), the output is read as a run reads it
(its store's scan, parts included), and each unit is placed by the run's own rule (standing.standing_units). No lock
is taken: what another run is writing at the moment may be counted either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..inputs.listing import Unlisted
from ..options import GenerationOptions, ModelOptions, RunOptions
from ..output.formats import detect_format
from ..output.handle import present_only
from ..output.store import Store
from ..tasks import Task, path_key
from .pipeline import as_items, counted, stated
from .standing import CHANGED, DONE, FAILED, NEW, OTHER, SETTINGS, TWICE, standing_units


@dataclass
class Plan:
    """What a run with these options would do. Counts are of units: images for ground, (image, box) for refer,
    (image, phrase) for find."""

    task: str
    out: str
    images: int = 0  # what the inputs name (images, or manifest rows)
    held: int = 0  # records the output holds (the last of each key)
    new: int = 0  # not recorded yet
    recorded: int = 0  # recorded ok, with these settings, the file as it was: skipped
    failed: int = 0  # recorded as failed: skipped, or done again with --retry-failed
    other_settings: int = 0  # recorded with other settings (`settings`): done again
    settings: set[str] = field(default_factory=set)
    changed: int = 0  # the file changed on disk (size or modification time) since it was recorded: done again
    twice: int = 0  # units whose key another unit of these inputs has: skipped
    prunable: int | None = 0  # records --prune would drop; None: the inputs could not all be seen (`unseen`)
    unseen: str = ""
    overwrite: bool = False
    retry_failed: bool = False
    prune: bool = False
    seconds: float = 0.0

    @property
    def units(self) -> int:
        return self.new + self.recorded + self.failed + self.other_settings + self.changed

    @property
    def todo(self) -> int:
        """Units the run would send through the model."""
        if self.overwrite:
            return self.units
        return self.new + self.other_settings + self.changed + (self.failed if self.retry_failed else 0)

    @property
    def pruned(self) -> int:
        """Records the run would drop: with --prune, those of images no longer in the inputs."""
        return (self.prunable or 0) if self.prune and not self.overwrite else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "out": self.out,
            "todo": self.todo,
            "images": self.images,
            "held": self.held,
            "units": self.units,
            "new": self.new,
            "recorded": self.recorded,
            "failed": self.failed,
            "other_settings": self.other_settings,
            "settings": [s for s in SETTINGS if s in self.settings],
            "changed": self.changed,
            "twice": self.twice,
            "prunable": self.prunable,
            "pruned": self.pruned,
            "unseen": self.unseen or None,
            "overwrite": self.overwrite,
            "retry_failed": self.retry_failed,
            "prune": self.prune,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """What a person reads: the breakdown, one fact a line."""
        held = f"{self.held} record{'s' * (self.held != 1)}"
        said = [f"{counted(self.task, self.units)} in the inputs; {self.out} holds {held}"]
        if self.overwrite:
            said.append(f"--overwrite: every one done again; the {self.held} records held are dropped")
        said.append(f"{self.new} new")
        said.append(f"{self.recorded} recorded and unchanged: skipped")
        if self.other_settings:
            which = "/".join(s for s in SETTINGS if s in self.settings)
            said.append(f"{self.other_settings} recorded with other settings ({which}): done again")
        if self.changed:
            said.append(f"{self.changed} changed on disk since recorded: done again")
        if self.failed:
            fate = "done again (--retry-failed)" if self.retry_failed else "skipped; --retry-failed does them again"
            said.append(f"{self.failed} failed before: {fate}")
        if self.twice:
            said.append(f"{self.twice} named twice: done once")
        if self.prunable is None:
            said.append(f"--prune would remove no record: {self.unseen}")
        elif self.prunable:
            fate = "dropped (--prune)" if self.prune else "kept; --prune drops them"
            said.append(f"{self.prunable} recorded for images no longer in the inputs: {fate}")
        return said

    def line(self) -> str:
        """The last line, for scripts: `key=value` pairs, the same names as `as_dict`."""
        facts = self.as_dict()
        keys = ("todo", "new", "recorded", "failed", "other_settings", "changed", "pruned", "units")
        return f"kosmos {self.task} --dry-run: " + " ".join(f"{k}={facts[k]}" for k in keys) + f" -> {self.out}"


def decoding_of(model: ModelOptions, generation: GenerationOptions) -> str:
    """What a run with these options records as its decoding, before any model loads (int8 weights as asked)."""
    return generation.label + (" quantize=int8" if model.quantize else "")


def plan(task: Task, named: list, options: RunOptions, label: str, decoding: str) -> Plan:
    """What `task` over `named` with these options would do, found without the model and writing nothing; `label`
    and `decoding`: what the run's records would name as their model and decoding."""
    if options.out == "-":
        raise UsageError(
            "{param} compares the inputs with what an output holds: name the output with --out (stdout holds no "
            "records)",
            param="dry_run",
        )
    started = time.perf_counter()
    store = Store.for_run(options.out, detect_format(options.out, options.format), type(task), _Alone())
    store.check(named, overwrite=options.overwrite)  # refused as a run would refuse it: not ours, another task's
    seen = store.scan().seen
    found = Plan(
        task.name, options.out, overwrite=options.overwrite, retry_failed=options.retry_failed, prune=options.prune
    )
    found.held = len(seen)
    unseen = Unlisted()
    present: set[str] = set()
    counts = {NEW: 0, DONE: 0, FAILED: 0, CHANGED: 0, OTHER: 0, TWICE: 0}
    items = stated(as_items(named, options, task.per_row, unseen, (0, 1)))
    for item, standings in standing_units(items, task, label, decoding, seen):
        found.images += 1
        present.add(path_key(item.path, link=item.link))
        for _, standing in standings:
            counts[standing.kind] += 1
            found.settings |= standing.settings
    found.new, found.recorded, found.failed = counts[NEW], counts[DONE], counts[FAILED]
    found.changed, found.other_settings, found.twice = counts[CHANGED], counts[OTHER], counts[TWICE]
    if unseen:
        found.prunable, found.unseen = None, unseen.line()
    else:
        keep = present_only(present)
        found.prunable = sum(1 for key in seen if not keep(key))
    found.seconds = time.perf_counter() - started
    return found


class _Alone:
    """A dry run is one process, whatever launched it: it reads, and never waits for or joins anyone."""

    solo, main, merged, rank = True, True, True, 0
