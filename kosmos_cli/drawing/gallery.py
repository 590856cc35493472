"""index.html: a gallery of the annotated images that opens from their folder, each row's text highlighted in the
colours of its boxes. What a row's text is, and which words go with which box, its task says (`Task.caption_html`).
"""

from __future__ import annotations

import html
import os
from urllib.parse import quote

from .. import tasks
from ..errors import OutputError
from ..output.atomic import AtomicFile
from ..output.reader import Result
from .colors import color, text_color
from .render import Shape


class Gallery:
    """index.html at `path`, written a figure at a time to a temporary file; put in place by close(), or dropped
    by close(complete=False)."""

    def __init__(self, path: str, title: str):
        self.path, self.title = path, title
        self._file = None
        self._writing: AtomicFile | None = None  # index.html, written under a temporary name until close()

    def add(self, result: Result, shapes: list[Shape], target: str) -> None:
        href = quote(os.path.relpath(target, os.path.dirname(self.path)).replace(os.sep, "/"))
        name = html.escape(result.path)
        self._opened().write(
            f'<figure><a href="{href}"><img src="{href}" loading="lazy" alt="{name}"></a>'
            f'<figcaption><div class="path">{name}</div>{caption_html(result, shapes)}</figcaption></figure>\n'
        )

    def close(self, complete: bool = True) -> None:
        if complete:
            self._opened().write("</main>\n</body>\n</html>\n")
        if self._writing is not None and complete:
            self._writing.commit()
        elif self._writing is not None:
            self._writing.discard()
        self._file = self._writing = None

    def _opened(self):
        if self._file is None:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._writing = AtomicFile(self.path, sync=False)
                self._file = self._writing.file
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            self._file.write(_HTML_HEAD.format(title=html.escape(self.title)))
        return self._file


def caption_html(result: Result, shapes: list[Shape]) -> str:
    """The result's text as HTML, each phrase highlighted in its box colour; everything escaped."""
    mark = lambda text, i: _mark(text, shapes[i].color if i < len(shapes) else color(i))  # noqa: E731
    return tasks.get(result.task).caption_html(result.row, mark)


def _mark(text: str, fill) -> str:
    bg = "#%02x%02x%02x" % fill
    fg = "#%02x%02x%02x" % text_color(fill)
    return f'<mark style="background:{bg};color:{fg}">{html.escape(text)}</mark>'


_HTML_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; background: #f3f3f3; color: #222; }}
main {{ display: flex; flex-wrap: wrap; gap: 14px; }}
figure {{ margin: 0; width: 260px; background: #fff; padding: 8px; box-shadow: 0 1px 3px #0003; }}
figure img {{ display: block; max-width: 100%; max-height: 220px; margin: 0 auto 6px; }}
.path {{ color: #666; font-size: 12px; word-break: break-all; }}
mark {{ padding: 0 3px; border-radius: 3px; }}
.n {{ color: #666; font-size: 12px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<main>
"""
