"""File names (and any text) that are not valid Unicode: how they are recorded.

On Linux a file name is bytes. Python hands a name that is not UTF-8 over as a str with each bad byte held as a
lone surrogate (`os.fsdecode(b"caf\\xe9.jpg") == "caf\\udce9.jpg"`), and a JSON manifest can hold a lone
surrogate too (`"\\ud800"`). Such a str opens the real file, but cannot be written as UTF-8. The rule:

- the image is opened by its real name;
- JSONL and Parquet record it with each byte that is not UTF-8 written as the four characters `\\xNN` (its hex
  value), and any other lone surrogate as the six characters `\\uXXXX`, e.g. `caf\\xe9.jpg`. Valid text is
  recorded unchanged, so every name that is UTF-8 keeps its exact spelling;
- the resume key (tasks/base.path_key) is in that recorded form, so a rerun finds these images done;
- a reader of results (draw, export) opens a recorded path as written, else by its `original` name.

The same rule applies to every string of a record (carried columns, phrases, error messages).
"""

from __future__ import annotations

import re
from typing import Any


def recorded(text: str) -> str:
    """`text` as written to JSONL and Parquet: unchanged when it is valid Unicode, else escaped as above."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_escape(c) for c in text)
    return text


def clean(value: Any) -> Any:
    """`value` with every string in it (dict keys too) `recorded`; other values as they are."""
    if isinstance(value, str):
        return recorded(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


_ESCAPED = re.compile(r"\\x([89a-f][0-9a-f])|\\u(d[89a-f][0-9a-f]{2})")


def original(text: str) -> str:
    """The name `recorded` wrote as `text`: each `\\xNN` (NN from 80) and `\\uXXXX` of a surrogate undone. A name
    that really holds such characters reads back changed, so a reader tries `text` as written first."""
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m[1], 16)) if m[1] else chr(int(m[2], 16)), text)


def _escape(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode holds it
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return c
