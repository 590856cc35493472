"""Resume: where each unit stands against what the output holds for its key, and so what a run does with it.

The one rule a run (pipeline.py) and a dry run (plan.py) share: a unit recorded ok, with this run's settings (model,
prompt, decoding) and of the file as it is now, is done; one recorded as failed is done unless --retry-failed; one
recorded with other settings, or of a file changed since, is done again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..inputs.listing import Item
from ..inputs.locations import stat as location_stat
from ..model.files import same_model
from ..output.store import Recorded
from ..tasks import Settings, Task, Unit
from ..tasks.records import OK

SETTINGS = ("model", "prompt", "decoding")  # what a record was made with: a run with others redoes it


@dataclass(frozen=True)
class Standing:
    """Where one unit stands against what the output holds for its key: what a run does with it, and why."""

    kind: str  # NEW, DONE (recorded ok, as it is now), FAILED (recorded as failed), CHANGED (on disk), OTHER, TWICE
    settings: frozenset[str] = frozenset()  # OTHER: which of SETTINGS differ

    def skipped(self, retry_failed: bool) -> bool:
        return self.kind in (DONE, TWICE) or (self.kind == FAILED and not retry_failed)


NEW, DONE, FAILED, CHANGED, OTHER, TWICE = "new", "done", "failed", "changed", "other", "twice"


def standing_units(
    items: Iterable[Item], task: Task, label: str, decoding: str, seen: dict[str, Recorded]
) -> Iterator[tuple[Item, list[tuple[Unit, Standing]]]]:
    """(item, [(unit, Standing)]) for each item: each unit's standing against `seen`, the output's holdings; `label`
    and `decoding` are what this run's records name as their model and decoding.

    The one place a run (pipeline._todo) and a dry run (plan.py) decide what is done. Units whose keys collide (rows
    naming one box or phrase, however written) are one unit: the first one wins, the others are TWICE, in this run as
    in any rerun. Items come with their stat (pipeline.stated); one without is looked up here.
    """
    settings = Settings(label, decoding)
    met: set[str] = set()  # the keys of this run's units so far
    for item in items:
        if item.stat is None:
            item = dataclasses.replace(item, stat=location_stat(item.path))
        standings = []
        for unit in task.units(item, settings):
            if unit.key in met:
                standings.append((unit, Standing(TWICE)))
                continue
            met.add(unit.key)
            standings.append((unit, _standing(seen.get(unit.key), unit)))
        yield item, standings


def _standing(recorded: Recorded | None, unit: Unit) -> Standing:
    """Where `unit` stands against what the output holds for its key (`recorded`).

    Made with other settings than `unit` is (model, prompt, decoding; one not recorded, as in outputs written
    before `decoding`, counts as the same): OTHER, done again. A file changed (or appeared) since: CHANGED.
    """
    if recorded is None:
        return Standing(NEW)
    changed = frozenset(s for s in SETTINGS if _differs(s, getattr(recorded, s), getattr(unit, s)))
    if changed:
        return Standing(OTHER, changed)
    size, mtime = unit.stat or (None, None)
    if recorded.file_size != size or recorded.file_mtime != mtime:
        return Standing(CHANGED)
    return Standing(DONE if recorded.status == OK else FAILED)


def _differs(setting: str, recorded: str | None, current: str | None) -> bool:
    """Whether a record's `setting` is another than this run's: the model compared as a folder when it is one (the
    same folder named relative, absolute or through a link is the same model)."""
    if recorded is None or recorded == current:
        return False
    return setting != "model" or current is None or not same_model(recorded, current)
