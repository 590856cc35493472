"""What every export format is: a writer fed one image and its labels at a time, closed with the class names."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import ClassVar

from ..errors import OutputError, UsageError
from ..inputs.listing import EXPORT_MARKER
from ..output import placement
from ..output.atomic import unlink
from .boxes import Label
from .source import Image


@dataclass(frozen=True)
class Options:
    """What some formats need beyond the labels."""

    results: str  # the results file, named in what is written
    root: str | None = None  # image paths are written relative to it
    image_root: str | None = None  # Label Studio: a URL prefix or local-files path for the images
    copy_images: bool = False  # YOLO: copy the images instead of linking them


class Writer:
    """One export. `add` each image (in any order, each once), then `close` with the class names; `discard` on an
    error leaves no half-written file behind (a folder export keeps the files it wrote, which the same export run
    again replaces).

    One rule for every format: an export replaces what an earlier export of the same format wrote at OUT, and
    nothing else. A one-file format knows its own files by their first bytes (`ours`); a folder format marks its
    folder with EXPORT_MARKER, naming the format, before it writes anything there, and replaces only what it writes
    in it (`owned`). So an export cut short (Ctrl-C, a kill) is finished by the same command run again, which also
    removes the temporary files the cut left."""

    name: ClassVar[str] = ""  # the value of --to
    title: ClassVar[str] = ""  # what the help calls it ("Pascal VOC")
    default_out: ClassVar[str] = ""  # the OUT a command line offered to a user names (kosmos view's export line)
    takes: ClassVar[tuple[str, ...]] = ()  # the export options only this format takes (ExportOptions fields)
    folder: ClassVar[bool] = False  # OUT is a folder (new, empty, or this format's export), else one file
    out_kind: ClassVar[str] = "a .json file"  # what OUT is, for the help ("a new or empty folder" for a folder format)
    owned: ClassVar[tuple[str, ...]] = ()  # a folder format: what it writes in OUT, replaced by the next export

    def __init__(self, out: str, options: Options):
        self.out, self.options = out, options
        try:
            if self.folder:
                self._claim()
            else:
                for target in self.targets(out):
                    _remove_leftovers(target)
        except OSError as exc:
            raise write_error(exc, out) from None

    @classmethod
    def check(cls, out: str) -> None:
        """Refuse an OUT that cannot be this format's, before anything is read or written."""
        if cls.folder:
            if os.path.exists(out) and not os.path.isdir(out):
                raise UsageError(f"{out} is a file: --to {cls.name} writes a folder; name a new or empty folder")
            marked = exported_as(out)
            if marked is not None and marked != cls.name:
                raise UsageError(
                    f"{out} holds a --to {marked} export of kosmos: --to {cls.name} writes a folder of its own; "
                    "name a new or empty folder"
                )
            if marked is None and os.path.isdir(out) and os.listdir(out):
                raise UsageError(
                    f"{out} is not empty: --to {cls.name} writes a folder of its own (old labels would "
                    "mix with the new); name a new or empty folder, or one an earlier --to "
                    f"{cls.name} export wrote"
                )
        else:
            if os.path.isdir(out):
                raise UsageError(
                    f"{out} is a folder: --to {cls.name} writes one file; name a file, e.g. "
                    f"{os.path.join(out, cls.name + '.json')}"
                )
            parent = os.path.dirname(os.path.abspath(out))
            if not os.path.isdir(parent):
                raise UsageError(f"cannot write {out}: its folder {parent} does not exist")
            for target in cls.targets(out):  # only a file this format wrote before is written over
                if os.path.lexists(target) and not (os.path.isfile(target) and cls.ours(target)):
                    raise UsageError(
                        f"{target} exists and is not a {cls.name} export of kosmos: name a new file (an export "
                        "writes over its own earlier exports only, never over other files)"
                    )

    def _claim(self) -> None:
        """Mark OUT as this format's export (made if missing), then remove what an earlier one wrote there."""
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, EXPORT_MARKER), "w", encoding="utf-8") as f:
            f.write(
                f"{_MARK}{self.name}\nkosmos export wrote this folder: the same export run again replaces what it "
                f"wrote here ({', '.join(self.owned)}), and kosmos ground, refer and find leave this folder out when "
                "they walk a folder around it.\n"
            )
        for name in self.owned:
            path = os.path.join(self.out, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                unlink(path)
            _remove_leftovers(path, alive=False)

    @classmethod
    def targets(cls, out: str) -> list[str]:
        """The files a one-file export writes: OUT, and whatever goes beside it."""
        return [out]

    @classmethod
    def ours(cls, path: str) -> bool:
        """Whether the existing file `path` is one this format's export wrote (read from its first bytes)."""
        return False

    def add(self, image: Image, labels: list[Label], names: list[str]) -> str | None:
        """Write what this image needs (`names`: the class names so far, by index); returns why it could not be
        exported, or None."""
        raise NotImplementedError

    def close(self, classes: list[str]) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        """Called instead of close after an error."""

    def written(self) -> list[str]:
        """The files written besides per-image ones, for the summary."""
        return [self.out]


class UniqueNames:
    """File names below a folder, none given twice whatever the case: a.jpg then a.png -> a.png becomes a-2.png
    (their label files would both be a.txt)."""

    def __init__(self):
        self._used: set[str] = set()

    def __call__(self, layout: str) -> str:
        stem, ext = os.path.splitext(layout)
        name, n = layout, 1
        while os.path.splitext(name)[0].lower() in self._used:
            n += 1
            name = f"{stem}-{n}{ext}"
        self._used.add(os.path.splitext(name)[0].lower())
        return name


def starts_with(path: str, *heads: bytes) -> bool:
    """Whether the file at `path` begins with one of `heads` (how an export recognises its own earlier files)."""
    try:
        with open(path, "rb") as f:
            first = f.read(max(len(h) for h in heads))
    except OSError:
        return False
    return any(first.startswith(h) for h in heads)


_MARK = "kosmos export --to "  # the first line of EXPORT_MARKER, followed by the format's name


def exported_as(out: str) -> str | None:
    """The format whose export marked the folder `out` (EXPORT_MARKER); None when it holds no mark of ours."""
    try:
        with open(os.path.join(out, EXPORT_MARKER), encoding="utf-8", errors="replace") as f:
            first = f.readline(200).strip()
    except OSError:
        return None
    return first[len(_MARK) :] if first.startswith(_MARK) else None


def _remove_leftovers(path: str, alive: bool = True) -> None:
    """Remove `path`.PID.tmp files an export killed while writing `path` left (AtomicFile names them so); `alive`:
    keep those of a process still running (another export, writing now)."""
    folder, base = os.path.split(os.path.abspath(path))
    for leftover in glob.glob(os.path.join(glob.escape(folder), glob.escape(base) + ".*.tmp")):
        pid = os.path.basename(leftover)[len(base) + 1 : -4]
        if pid.isdigit() and not (alive and _running(int(pid))):
            unlink(leftover)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: running
        return True
    return True


def write_error(exc: OSError, path: str) -> OutputError:
    return placement.write_error(exc, path, "OUT")


# Characters XML 1.0 does not allow (control characters but tab and line breaks, surrogates, U+FFFE and U+FFFF),
# and those YAML does not print (DEL and C1 controls, noncharacters) or reads as line breaks (NEL, U+2028, U+2029)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_YAML = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")


def xml_text(value: object) -> str:
    """`value` as text an XML file can hold: a character XML 1.0 does not allow is written as its escape (`\\x01`,
    `\\ufffe`), as a file name that is not UTF-8 is recorded (inputs/names.py)."""
    return _NOT_XML.sub(lambda m: _escape(m.group()), str(value))


def yaml_string(value: str) -> str:
    """`value` as a YAML double-quoted string that any YAML reader reads back as it is (JSON's escapes are YAML's)."""
    return _NOT_YAML.sub(lambda m: "\\u%04x" % ord(m.group()), json.dumps(value, ensure_ascii=False))


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
