"""What every task is: one class owning everything that differs between ground, refer and find.

A task (after transformers' pipelines: one class per task, a registry from name to class) owns

- its record type and fields, and their Arrow fields (`record_type`, `arrow_fields`);
- what makes one of its records unique in an output (`key_fields`, `key`): the image by its canonical path
  (`path_key`), so `rs/a.png`, `./rs/a.png`, `$PWD/rs/a.png` and a symlink to `rs` are one image to resume;
- its checks before a model loads (`check`);
- turning an input item into units (each the facts of one record to make), a unit into a prompt, and a finished
  unit into its record (`units`, `prompt`, `record`, the task's own fields from `own_fields`): the pipeline runs any
  task the same way;
- what `kosmos draw` shows of a record and its HTML caption (`shapes`, `box_scores`, `caption_html`);
- whether its boxes are detections that `kosmos export` can write as labels (`detects`).

Class-level methods read result rows (any file's); an instance carries one run's settings (a prompt, boxes,
phrases). Adding a task is one new module plus a line in the registry (`tasks/__init__.py`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..inputs.listing import MANIFEST_EXTENSIONS, Item
from ..inputs.locations import is_remote, local_path, split_member
from ..inputs.names import clean, recorded
from ..model.prompts import Prompt
from .records import ERROR, OK, Record, common_arrow_fields, one_line
from .scores import Generation

Mark = Callable[[str, int], str]  # (text, entity index) -> HTML of that text in the entity's colour
Found = tuple[str, list[list[float]]]  # what draw shows of one entity: its label and its pixel boxes


@dataclass(frozen=True)
class Settings:
    """What a run's records are made with, besides each one's prompt: a rerun with others does them again."""

    model: str  # the model's label (ModelOptions.label)
    decoding: str | None = None  # engine.GenerationOptions.label, and int8 weights when asked for


@dataclass(frozen=True)
class Unit:
    """One record to make, as its facts; the record itself is built once from them (`Task.record`), when the unit's
    answer is finished or it failed.

    What a task gives (`Task.unit`): the resume key, the image (its path as given, the carried columns its record
    keeps, its (size, modification time)), the settings and the prompt's text, and what the task needs to build
    the prompt (`data`: a box, a phrase, a problem with the row). What the run learns as it goes, each fact set
    once with `dataclasses.replace`: the displayed size, the seconds the model took, its generation, or an error.
    Small and picklable: a Ray actor or another rank is sent units and sends their records back.
    """

    key: str
    path: str
    settings: Settings
    prompt: str | None = None
    data: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    stat: tuple[int | None, float | None] | None = None
    # learned by the run
    size: tuple[int, int] | None = None  # (width, height) as displayed, once the image is loaded
    seconds: float | None = None  # the model's time per request of its batch
    generated: Generation | None = None  # the model's tokens and their probabilities (boxes' scores)
    error: str | None = None  # why no record of the task's own can be made: the unit fails, the run goes on

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def decoding(self) -> str | None:
        return self.settings.decoding

    @property
    def shown(self) -> tuple[int, int]:
        """(width, height) as displayed, for a unit whose image is loaded (any the model answered)."""
        assert self.size is not None, "the image is loaded before its prompt is made"
        return self.size

    def failed(self, error: str) -> Unit:
        return replace(self, error=error)


class Task:
    name: ClassVar[str] = ""
    noun: ClassVar[str] = "image"  # what one record is of, as the user hears of it: "3 images failed"
    record_type: ClassVar[type[Record]] = Record
    per_row: ClassVar[bool] = False  # several records per image: manifest rows naming one image are all kept
    stop_at: ClassVar[str | None] = None  # a token after which nothing the task reads follows: generation ends
    key_fields: ClassVar[tuple[str, ...]] = ()  # besides the path, what tells this task's records apart
    detects: ClassVar[bool] = False  # its boxes are the model's detections (ground, find): they can be exported

    # -- rows of any results file ------------------------------------------------------------------------
    @classmethod
    def key(cls, row: Mapping[str, Any], base: str | None = None, link: bool | None = None) -> str:
        """What makes a row unique in its output: the image (`path_key`), and for refer/find the region or phrase.

        `base`: the output's folder, for rows read back from it (a relative path there may have been written from
        that folder). A path that is not valid Unicode counts as it is recorded (inputs/names.py), so a rerun finds such
        images done. `link`: whether the path is a symlink, when its listing said (`path_key`).
        """
        parts = (json.dumps(clean(row.get(f))) for f in cls.key_fields)
        return "\x00".join([path_key(row["path"], base, link), *parts])

    @classmethod
    def resume_columns(cls) -> tuple[str, ...]:
        """What resuming reads of an output: enough to key a row and tell whether it is done, and with what."""
        return ("path", "file_size", "file_mtime", "status", "model", "prompt", "decoding", *cls.key_fields)

    @classmethod
    def arrow_fields(cls) -> list:
        raise NotImplementedError

    @classmethod
    def schema(cls, extra: Any = None):
        """The Parquet schema of this task's records; `extra` is a pyarrow schema of the carried columns."""
        import pyarrow as pa

        fields = common_arrow_fields() + cls.arrow_fields()
        if extra is not None:
            names = {f.name for f in fields}
            fields += [f for f in extra if f.name not in names]
        return pa.schema(fields, metadata={b"kosmos_cli.task": cls.name.encode()})

    @classmethod
    def owns(cls, row: Mapping[str, Any]) -> bool:
        """A row written before records named their task: does it hold this task's fields?"""
        return any(name in row for name in cls.record_type.fields)

    @classmethod
    def shapes(cls, row: Mapping[str, Any]) -> list[Found]:
        """What `kosmos draw` shows: one (label, pixel boxes) per entity, in colour order."""
        raise NotImplementedError

    @classmethod
    def box_scores(cls, row: Mapping[str, Any]) -> list[list[float | None] | None]:
        """A score per box of each entity `shapes` gives, in its order; None for an entity without scores (a record
        written before scores, a decoding that kept none, a region given rather than found)."""
        return [None for _ in cls.shapes(row)]

    @classmethod
    def caption_html(cls, row: Mapping[str, Any], mark: Mark) -> str:
        """The row's text for the gallery, each entity's words passed through `mark`; the rest escaped."""
        raise NotImplementedError

    # -- what kosmos view shows of a table of records (Arrow; view/index.py) -----------------------------------------
    text_field: ClassVar[str | None] = None  # the record's text the page searches and shows ("caption")
    facet: ClassVar[str | None] = None  # the one value of a record the page filters on ("phrase", "region")

    @classmethod
    def entity_columns(cls, table) -> tuple[Any, Any, Any, Any]:
        """One entry per entity of the records in `table`: (its record's row as numpy, its label, its pixel boxes,
        their scores) as Arrow arrays, the label a string, the boxes lists of 4 numbers, the scores lists of floats.
        A task that draws no boxes: none."""
        import numpy as np
        import pyarrow as pa

        return (
            np.zeros(0, dtype=np.int64),
            pa.array([], pa.string()),
            pa.array([], pa.list_(pa.list_(pa.int32()))),
            (pa.array([], pa.list_(pa.float64()))),
        )

    @classmethod
    def facet_values(cls, table) -> Any:
        """Each record's value of `facet`, as the page's filter gives it (an Arrow array), or None without one."""
        return None

    # -- one run ---------------------------------------------------------------------------------------------
    def check(self, inputs: Sequence[Any]) -> None:
        """Raise UsageError for what can be told wrong before a model loads (the inputs are named)."""

    def units(self, item: Item, settings: Settings) -> list[Unit]:
        """The units of one input item (`unit` makes each); the item comes with its stat."""
        raise NotImplementedError

    def prompt(self, unit: Unit) -> Prompt:
        """The prompt for `unit`, its image loaded (`unit.size`); raise ValueError to fail just this unit."""
        raise NotImplementedError

    def own_fields(self, unit: Unit, text: str | None) -> dict[str, Any]:
        """The task's own fields of `unit`'s record: from the generated `text`, or, with None (the unit failed), what
        its facts alone give. Raise ValueError when the text cannot be used (the unit fails).

        `unit.generated`, with a text, holds the tokens behind it and their probabilities (boxes' scores)."""
        raise NotImplementedError

    def unit(self, item: Item, settings: Settings, keyed: Mapping[str, Any] | None = None, **facts: Any) -> Unit:
        """A unit of `item`: its key from the item's path and `keyed` (the task's `key_fields`), the item's carried
        columns unless `facts` give its `extra`, and the other `facts` (prompt, data)."""
        facts.setdefault("extra", dict(item.extra))
        key = self.key({"path": item.path, **(keyed or {})}, link=item.link)
        return Unit(key, item.path, settings, stat=item.stat, **facts)

    def record(self, unit: Unit) -> Record:
        """`unit`'s record, built once from its facts: an error record when it failed (before the model, in it, or
        the text could not be used), else one with the fields the task reads from the generated text."""
        error = unit.error
        own: dict[str, Any] = {}
        if error is None:
            assert unit.generated is not None, "a unit is finished once answered or failed"
            try:
                own = self.own_fields(unit, unit.generated.text)
            except ValueError as exc:  # output the parser cannot use: that unit fails, the run goes on
                error = f"cannot read the model's output: {exc}"
        if error is not None:
            own = self.own_fields(unit, None)
        width, height = unit.size or (None, None)
        file_size, file_mtime = unit.stat or (None, None)
        return self.record_type(
            path=unit.path,
            width=width,
            height=height,
            status=OK if error is None else ERROR,
            error=None if error is None else one_line(error),
            prompt=unit.prompt,
            model=unit.model,
            decoding=unit.decoding,
            file_size=file_size,
            file_mtime=file_mtime,
            seconds=unit.seconds,
            extra=dict(unit.extra),
            **own,
        )


def path_key(path: str, base: str | None = None, link: bool | None = None) -> str:
    """The image part of a resume key: `path` made canonical, in its recorded form (inputs/names.py). Records keep the
    path as given; only keys are canonical, so a run by another spelling of the same folder finds it done.

    Canonical is the real path (symlinks resolved, `.` and `..` gone); a relative path is taken from the current
    folder, or, when no file is there and `base` is given, from `base` (where the output is). A path the system
    cannot look up (a NUL byte, a lone surrogate) is made absolute only. A URL is its own key; a sample of a
    container (`SHARD.tar#KEY`) is its container's key with `#KEY`. `link`: whether `path` is a symlink, when the
    caller knows (a folder's listing does, for free); otherwise it is looked up (one lstat).
    """
    if is_remote(path):
        return path
    path = local_path(path)
    member = split_member(path)
    if member is not None:
        return f"{path_key(member[0], base)}#{member[1]}"
    if base is not None and not os.path.isabs(path) and not os.path.lexists(path):
        beside = os.path.join(base, path)
        if os.path.lexists(beside):
            path = beside
    try:
        full = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
        folder, name = os.path.split(full)
        if name in ("", ".", ".."):
            return recorded(os.path.realpath(full))
        full = os.path.join(_real_folder(folder), name)  # one lookup a folder, not one a path component
        if link is None:
            link = os.path.islink(full)
        return recorded(os.path.realpath(full) if link else full)
    except ValueError:  # NUL in the path, or a lone surrogate the file system cannot take
        return recorded(os.path.abspath(path))


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def forget_folders() -> None:
    """Look folders up afresh: an output is read at the start of a run (Store.scan), and the run's keys then
    share that one view of the file system."""
    _real_folder.cache_clear()


def need_rows(inputs: Sequence[Any], error: Exception) -> None:
    """Without boxes or phrases of its own, a run reads them from manifest rows (or JSON lines on stdin)."""
    if not any(isinstance(i, Item) or i == "-" or str(i).lower().endswith(MANIFEST_EXTENSIONS) for i in inputs):
        raise error
