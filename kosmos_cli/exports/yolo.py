"""YOLO, in the Ultralytics layout: OUT/images/ (links to the images, or copies), OUT/labels/*.txt (one
"class cx cy w h" line per box, normalised 0-1), OUT/data.yaml (the folder and the class names).

Labels are in the frame of the image as displayed (EXIF orientation applied), as every record's boxes are. The
images are linked or copied as they are, EXIF tag included, so a reader must apply the EXIF orientation as
Ultralytics does (its loaders use the displayed size and frame); a reader that ignores EXIF would see a rotated
photo's labels turned.
"""

from __future__ import annotations

import os
import shutil

from ..inputs.images import NOT_REGULAR, NotRegular, is_image_path, is_special, open_regular
from ..inputs.locations import Unreadable, is_local, read_bytes
from ..output.atomic import atomic_write
from .base import Options, UniqueNames, Writer, write_error, yaml_string
from .boxes import Label
from .source import Image


class Yolo(Writer):
    name = "yolo"
    out_kind = "a new or empty folder"
    title = "YOLO"
    default_out = "dataset/"
    takes = ("copy_images",)
    folder = True
    owned = ("images", "labels", "data.yaml")

    def __init__(self, out: str, options: Options):
        super().__init__(out, options)
        self._names = UniqueNames()
        try:
            os.makedirs(os.path.join(out, "images"), exist_ok=True)
            os.makedirs(os.path.join(out, "labels"), exist_ok=True)
        except OSError as exc:
            raise write_error(exc, out) from None

    def add(self, image: Image, labels: list[Label], names: list[str]) -> str | None:
        data = None
        if not is_local(
            image.source
        ):  # a link cannot point at a URL or a shard's sample: its bytes are written as a file
            try:
                data = read_bytes(image.source)
            except Unreadable as exc:
                return f"cannot read the image: {exc}"
        elif is_special(image.source):  # a FIFO, a socket, a device: never opened, never linked
            return NOT_REGULAR
        elif not os.path.isfile(image.source):
            return "image not found (YOLO needs the image beside its labels)"
        layout = image.layout
        if data is not None:  # named for what the bytes are (a shard's sample is laid out as KEY.png whatever it is)
            stem, ext = os.path.splitext(layout)
            kind = _extension(data)
            layout = (
                layout
                if ext.lower() in _SAME.get(kind, (kind,))
                else (stem if is_image_path(layout) else layout) + kind
            )
        layout = self._names(layout)
        target = os.path.join(self.out, "images", *layout.split("/"))
        label_file = os.path.join(self.out, "labels", *os.path.splitext(layout)[0].split("/")) + ".txt"
        w, h = image.width, image.height
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if data is not None:
                with atomic_write(target, "wb", sync=False) as out:
                    out.write(data)
            elif self.options.copy_images:  # whole or not at all, as every file of an export
                with open_regular(image.source) as src, atomic_write(target, "wb", sync=False) as copy:
                    shutil.copyfileobj(src, copy)
            else:
                os.symlink(os.path.abspath(image.source), target)
            os.makedirs(os.path.dirname(label_file), exist_ok=True)
            with atomic_write(label_file, sync=False) as f:
                for label in labels:
                    x1, y1, x2, y2 = label.box
                    f.write(
                        f"{label.cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                        f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
                    )
        except NotRegular:  # swapped for a FIFO since it was looked at
            return NOT_REGULAR
        except OSError as exc:
            raise write_error(exc, target) from None
        return None

    def close(self, classes: list[str]) -> None:
        path = os.path.join(self.out, "data.yaml")
        lines = [
            f"# written by kosmos export from {yaml_string(os.path.basename(self.options.results))}",
            f"path: {yaml_string(os.path.abspath(self.out))}",
            "train: images",
            "val: images",
            "names:",
        ]
        lines += [f"  {i}: {yaml_string(name)}" for i, name in enumerate(classes)]
        if not classes:
            lines[-1] = "names: {}"
        try:
            with atomic_write(path, sync=False) as f:
                f.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise write_error(exc, path) from None

    def written(self) -> list[str]:
        return [os.path.join(self.out, "data.yaml")]


_SAME = {".jpg": (".jpg", ".jpeg", ".jpe", ".jfif"), ".tif": (".tif", ".tiff")}


def _extension(data: bytes) -> str:
    """The file extension for an image's bytes, from their signature (JPEG when none is known)."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if data.startswith(b"BM"):
        return ".bmp"
    return ".jpg"
