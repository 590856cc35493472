"""What flows between the stages: one `Record` per image (or per region / phrase), and its schemas.

The same keys go to JSONL and Parquet. Which keys a record has depends on its task:

- every task: path, width, height, status, error, prompt, model, file_size, file_mtime, seconds
- ground: caption, entities [{phrase, start, end, boxes, boxes_px}]
- refer: box_px, box_model_px, description
- find: phrase, boxes, boxes_px

plus the columns carried over from a manifest. Boxes are [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2:
`boxes` normalised to 0-1 of the displayed image, `boxes_px` in its pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
ERROR = "error"

COMMON_FIELDS = (
    "path", "width", "height", "status", "error", "prompt", "model", "file_size", "file_mtime", "seconds",
)
TASK_FIELDS = {
    "ground": ("caption", "entities"),
    "refer": ("box_px", "box_model_px", "description"),
    "find": ("phrase", "boxes", "boxes_px"),
}
TASKS = tuple(TASK_FIELDS)
ALL_FIELDS = frozenset(COMMON_FIELDS).union(*TASK_FIELDS.values())


@dataclass
class Entity:
    """A grounded phrase: its text, its character span in the caption, and its boxes."""

    phrase: str
    start: int
    end: int
    boxes: list[list[float]]
    boxes_px: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase, "start": self.start, "end": self.end,
            "boxes": [list(b) for b in self.boxes], "boxes_px": [list(b) for b in self.boxes_px],
        }


@dataclass
class Record:
    """One result row. Fields that do not belong to `task` stay None and are not written."""

    path: str
    task: str = "ground"
    width: int | None = None
    height: int | None = None
    status: str = OK
    error: str | None = None
    prompt: str | None = None
    model: str | None = None
    file_size: int | None = None
    file_mtime: float | None = None
    seconds: float | None = None
    # ground
    caption: str | None = None
    entities: list[Entity] = field(default_factory=list)
    # refer
    box_px: list[float] | None = None
    box_model_px: list[int] | None = None
    description: str | None = None
    # find
    phrase: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    boxes_px: list[list[int]] = field(default_factory=list)
    # columns carried over from a manifest
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def fail(self, error: str) -> Record:
        """Turn this record into an error record (the run goes on)."""
        self.status, self.error = ERROR, one_line(error)
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in COMMON_FIELDS + TASK_FIELDS[self.task]:
            value = getattr(self, name)
            if name == "entities":
                value = [e.to_dict() for e in value]
            elif name in ("boxes", "boxes_px", "box_px", "box_model_px") and value is not None:
                value = [list(b) for b in value] if name in ("boxes", "boxes_px") else list(value)
            out[name] = value
        for key, value in self.extra.items():
            out[carried_name(key)] = value
        return out


def carried_name(column: str) -> str:
    """A manifest column keeps its name unless it collides with one of ours; then it gets `input_`."""
    return f"input_{column}" if column in ALL_FIELDS or column == "task" else column


def record_key(row: dict[str, Any], task: str) -> str:
    """What makes a row unique in its output: the image for ground, the image and region or phrase otherwise."""
    if task == "refer":
        return f"{row['path']}\x00{json.dumps(row.get('box_px'))}"
    if task == "find":
        return f"{row['path']}\x00{row.get('phrase')}"
    return row["path"]


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
    \\u2028, \\u202e), so a file name cannot break a line of the log, forge the next one or recolour the terminal."""
    return str(text).translate(_ESCAPES)


def to_jsonable(value: Any) -> Any:
    """Carried manifest values of any type, made JSON-safe (NaN becomes null, others their str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return str(value)


def arrow_schema(task: str, extra: Any = None):
    """The Parquet schema of `task`'s records; `extra` is a pyarrow schema of the carried columns."""
    import pyarrow as pa

    box = pa.list_(pa.float64())
    box_px = pa.list_(pa.int32())
    common = [
        ("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("status", pa.string()),
        ("error", pa.string()), ("prompt", pa.string()), ("model", pa.string()), ("file_size", pa.int64()),
        ("file_mtime", pa.float64()), ("seconds", pa.float64()),
    ]
    task_fields = {
        "ground": [
            ("caption", pa.string()),
            ("entities", pa.list_(pa.struct([
                ("phrase", pa.string()), ("start", pa.int32()), ("end", pa.int32()),
                ("boxes", pa.list_(box)), ("boxes_px", pa.list_(box_px)),
            ]))),
        ],
        "refer": [("box_px", box), ("box_model_px", box_px), ("description", pa.string())],
        "find": [("phrase", pa.string()), ("boxes", pa.list_(box)), ("boxes_px", pa.list_(box_px))],
    }[task]
    fields = [pa.field(n, t) for n, t in common + task_fields]
    if extra is not None:
        fields += [f for f in extra if f.name not in {x.name for x in fields}]
    return pa.schema(fields, metadata={b"kosmos_cli.task": task.encode()})
