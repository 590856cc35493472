"""Pascal VOC: OUT/Annotations/<image>.xml, one per image, and OUT/labels.txt with the class names in order.

Boxes are VOC's 1-based inclusive pixels of the image as displayed: [x1, y1, x2, y2) -> xmin x1+1, ymin y1+1,
xmax x2, ymax y2. Each object carries its score in a <score> element (readers of plain VOC ignore it).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from ..output.atomic import atomic_write
from .base import Options, UniqueNames, Writer, write_error, xml_text
from .boxes import Label
from .source import Image


class Voc(Writer):
    name = "voc"
    out_kind = "a new or empty folder"
    title = "Pascal VOC"
    default_out = "voc/"
    folder = True
    owned = ("Annotations", "labels.txt")

    def __init__(self, out: str, options: Options):
        super().__init__(out, options)
        self._names = UniqueNames()
        try:
            os.makedirs(os.path.join(out, "Annotations"), exist_ok=True)
        except OSError as exc:
            raise write_error(exc, out) from None

    def add(self, image: Image, labels: list[Label], names: list[str]) -> str | None:
        stem = os.path.splitext(self._names(image.layout))[0]
        path = os.path.join(self.out, "Annotations", *stem.split("/")) + ".xml"
        root = ET.Element("annotation")
        folder, filename = os.path.split(image.name.replace("/", os.sep))
        _text(root, "folder", folder.replace(os.sep, "/"))
        _text(root, "filename", filename)
        _text(root, "path", image.name)
        source = ET.SubElement(root, "source")
        _text(source, "database", "kosmos")
        size = ET.SubElement(root, "size")
        _text(size, "width", image.width)
        _text(size, "height", image.height)
        _text(size, "depth", 3)
        _text(root, "segmented", 0)
        for label in labels:
            obj = ET.SubElement(root, "object")
            _text(obj, "name", names[label.cls])
            _text(obj, "pose", "Unspecified")
            _text(obj, "truncated", 0)
            _text(obj, "difficult", 0)
            if label.score is not None:
                _text(obj, "score", label.score)
            box = ET.SubElement(obj, "bndbox")
            x1, y1, x2, y2 = label.box
            for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                _text(box, tag, value)
        ET.indent(root)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_write(path, "wb", sync=False) as f:
                ET.ElementTree(root).write(f, encoding="utf-8", xml_declaration=True)
        except OSError as exc:
            raise write_error(exc, path) from None
        return None

    def close(self, classes: list[str]) -> None:
        path = os.path.join(self.out, "labels.txt")
        try:
            with atomic_write(path, sync=False) as f:
                f.write("".join(name + "\n" for name in classes))
        except OSError as exc:
            raise write_error(exc, path) from None

    def written(self) -> list[str]:
        return [os.path.join(self.out, "labels.txt")]


def _text(parent, tag: str, value) -> None:
    ET.SubElement(parent, tag).text = xml_text(value)  # a phrase or file name may hold what XML cannot
