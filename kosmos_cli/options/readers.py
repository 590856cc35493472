"""The options of the readers of results (kosmos draw, export, eval and view), declared once as a run's are
(options/__init__.py): which boxes a reader keeps, which class a phrase's boxes are, and how each command writes or
shows them."""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from .declare import Group, option


@dataclass(frozen=True)
class ScoreFilter(Group):
    """Which boxes a reader of results keeps."""

    min_score: float | None = option(
        None,
        "Only boxes whose score (0-1) is at least this; boxes without a score are left out.",
        show_default=False,
    )


@dataclass(frozen=True)
class DrawOptions(Group):
    """How kosmos draw writes its pictures."""

    html: bool = option(False, "Also write index.html, a gallery that opens from the folder in a browser.")


@dataclass(frozen=True)
class ClassOptions(Group):
    """Which class a phrase's boxes are (export and eval match phrases the same way)."""

    classes: str | None = option(
        None,
        'Classes, in order, comma-separated ("dog,cat,traffic light"): only boxes whose phrase names one ("two dogs" '
        "is dog) \\[default: export: one class per distinct phrase; eval: the truth's classes].",
        show_default=False,
        api_type=Optional[typing.Union[str, Iterable[str]]],
    )
    classes_file: str | None = option(None, "Classes, one a line, as --classes.", show_default=False)


@dataclass(frozen=True)
class Duplicates(Group):
    """Which of overlapping boxes of one class stay (export and eval drop the same ones)."""

    nms: float | None = option(
        None,
        "Of boxes of one class in one image overlapping by more than this IoU, keep the best-scored.",
        show_default=False,
    )


@dataclass(frozen=True)
class ExportOptions(Group):
    """How an export names images, and what only some formats take."""

    root: str | None = option(None, "Write image paths relative to this folder.", show_default=False)
    image_root: str | None = option(
        None,
        "labelstudio: a URL prefix or local-files path put before each image's path "
        "(e.g. /data/local-files/?d=photos/).",
        show_default=False,
    )
    copy_images: bool = option(False, "yolo: copy the images into OUT/images instead of linking them.")


@dataclass(frozen=True)
class ViewOptions(Group):
    """Where kosmos view listens, and what it keeps in memory."""

    port: int | None = option(
        None,
        "Port to listen on; 0: any free one \\[default: 8000, or the next free one up to 8019].",
        show_default=False,
    )
    host: str = option(
        "127.0.0.1",
        "Address to listen on; any other than 127.0.0.1 lets other machines see the results and their images.",
    )
    open_browser: bool = option(False, "Open the page in the default browser.", "--open")
    cache_mb: int = option(64, "Memory for the images made for the page, in MB.")


@dataclass(frozen=True)
class EvalOptions(Group):
    """What kosmos eval pairs, and how it shows what it measured."""

    root: str | None = option(
        None,
        "Pair images by their paths relative to this folder (when the truth's names and the recorded paths differ "
        "by a prefix) \\[default: as recorded; a truth name also pairs with the one recorded path it ends].",
        show_default=False,
    )
    plot: str | None = option(
        None,
        "Also draw precision against recall per class, the chosen --min-score marked, into this .png file.",
        show_default=False,
    )
