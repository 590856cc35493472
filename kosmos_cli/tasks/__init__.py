"""The tasks, by name: what each command asks of the model and how its answer becomes a record.

    ground  caption an image and ground its phrases   one record per image
    refer   describe a region                          one record per (image, box)
    find    boxes for a phrase                         one record per (image, phrase)

A new task is one module with a `Task` subclass and its record type, plus its line in api.py: `register_task`
puts it in `REGISTRY` (the readers of results find it there), and gives it its API function and its command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Settings, Task, Unit, forget_folders, path_key
from .find import Find, FindRecord
from .ground import Ground, GroundRecord
from .records import reserved_names
from .refer import Refer, ReferRecord

REGISTRY: dict[str, type[Task]] = {}  # name -> task, in the order api.register_task was given them


def get(name: str) -> type[Task]:
    return REGISTRY[name]


def of_row(row: Mapping[str, Any]) -> type[Task] | None:
    """The task that wrote `row`: its `task` column, or for a row written before that column, its fields."""
    named = row.get("task")
    if isinstance(named, str) and named in REGISTRY:
        return REGISTRY[named]
    if named is not None:
        return None
    return next((task for task in REGISTRY.values() if task.owns(row)), None)


__all__ = [
    "REGISTRY",
    "Find",
    "FindRecord",
    "Ground",
    "GroundRecord",
    "Refer",
    "ReferRecord",
    "Settings",
    "Task",
    "Unit",
    "forget_folders",
    "get",
    "of_row",
    "path_key",
    "reserved_names",
]
