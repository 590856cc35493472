"""What flows between the stages: one `Record` per image (or per region / phrase), and the fields every task shares.

The same keys go to JSONL and Parquet. Every record has the common fields:

    path, task, width, height, status, error, prompt, model, decoding, file_size, file_mtime, seconds

then the fields of its task (each task's record type, in `tasks/`, declares them), then the columns carried over
from a manifest. `task` names the command that wrote the record (ground, refer, find): readers take it from
there, never from which keys are present. `model`, `prompt` and `decoding` are the settings a record was made
with: a rerun with others redoes it. Boxes are [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2: `boxes`
normalised to 0-1 of the displayed image, `boxes_px` in its pixels.

A leaf: it imports nothing of ours. The column names of every task (a carried column of one of those names is
renamed) are known here because each record type adds its fields when it is defined (`reserved_names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import redact

OK = "ok"
ERROR = "error"

COMMON_FIELDS = (
    "path",
    "task",
    "width",
    "height",
    "status",
    "error",
    "prompt",
    "model",
    "decoding",
    "file_size",
    "file_mtime",
    "seconds",
)
_reserved = frozenset(COMMON_FIELDS)  # and every record type's fields, added as each type is defined


@dataclass
class Entity:
    """A grounded phrase: its text, its character span in the caption, its boxes, and a score per box.

    `scores`: in [0, 1], the geometric mean of the model's probabilities for the two location tokens of each box
    (scores.py); None when the decoding kept none (beam search) or the record was written before scores.
    """

    phrase: str
    start: int
    end: int
    boxes: list[list[float]]
    boxes_px: list[list[int]]
    scores: list[float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "start": self.start,
            "end": self.end,
            "boxes": [list(b) for b in self.boxes],
            "boxes_px": [list(b) for b in self.boxes_px],
            "scores": None if self.scores is None else list(self.scores),
        }


@dataclass
class Record:
    """One result row: the fields every task shares. Each task's record type adds its own (`fields`).

    Built once, whole (tasks/base.py, `Task.record`): an error record is made as one (`status`, `error`)."""

    task: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()  # the task's own fields, in output order

    path: str
    width: int | None = None
    height: int | None = None
    status: str = OK
    error: str | None = None
    prompt: str | None = None
    model: str | None = None
    decoding: str | None = None  # engine.GenerationOptions.label
    file_size: int | None = None
    file_mtime: float | None = None
    seconds: float | None = None
    # columns carried over from a manifest
    extra: dict[str, Any] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A task's record type: its fields join the names a carried column may not take (`reserved_names`)."""
        super().__init_subclass__(**kwargs)
        global _reserved
        _reserved = _reserved | frozenset(cls.fields)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COMMON_FIELDS}
        out.update(self.own_dict())
        if self.extra:
            reserved = reserved_names()
            for key, value in self.extra.items():
                out[carried_name(key, reserved)] = value
        return out

    def own_dict(self) -> dict[str, Any]:
        """The task's own fields as plain JSON-ready values."""
        return {name: getattr(self, name) for name in self.fields}


def reserved_names() -> frozenset[str]:
    """Every column name of ours, whatever the task: a carried column of that name becomes `input_<name>`."""
    return _reserved


def carried_name(column: str, reserved: frozenset[str] | set[str] | None = None) -> str:
    """A manifest column keeps its name unless it is one of ours (any task's), or one of ours behind `input_`
    prefixes; then it gets one more `input_`: `status` -> `input_status`, `input_status` -> `input_input_status`.
    So two columns never share a name, whatever other columns a row has."""
    if reserved is None:
        reserved = reserved_names()
    column = str(column)
    base = column
    while base.startswith("input_"):
        base = base[len("input_") :]
    return f"input_{column}" if base in reserved else column


def one_line(message: str) -> str:
    text = printable(" ".join(str(message).split()))
    return text[:500] + ("..." if len(text) > 500 else "")


def _escapes() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}  # C0, DEL, C1
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)):  # line breaks, bidi overrides
        table[c] = f"\\u{c:04x}"
    table.update({c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)})  # undecodable bytes of a file name
    return table


_ESCAPES = _escapes()


def printable(text: str) -> str:
    """`text` safe to print as (part of) one line: control characters written as escapes (\\n, \\r, \\t, \\x1b,
    \\u2028, \\u202e), so a file name cannot break a line of the log, forge the next one or recolour the terminal;
    and the credentials of any URL in it left out (`redact`). Every line kosmos prints, and every record's `error`,
    is made by it."""
    return redact(str(text)).translate(_ESCAPES)


def common_arrow_fields() -> list:
    """The Parquet fields every task's records have, in order."""
    import pyarrow as pa

    return [
        pa.field("path", pa.string()),
        pa.field("task", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("model", pa.string()),
        pa.field("decoding", pa.string()),
        pa.field("file_size", pa.int64()),
        pa.field("file_mtime", pa.float64()),
        pa.field("seconds", pa.float64()),
    ]
