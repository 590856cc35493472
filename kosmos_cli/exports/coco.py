"""COCO: one JSON file with images, annotations (pixel bbox [x, y, w, h], area, category_id, score) and categories.

Built as it goes: images are written into the output's temporary file and annotations into a second temporary file
beside it, joined when the classes are known; the file appears whole, by rename, or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from ..output.atomic import AtomicFile
from .base import Options, Writer, starts_with, write_error
from .boxes import Label
from .source import Image

HEAD = '{"info": {"description": "kosmos export of '  # how every COCO file of ours begins


class Coco(Writer):
    name = "coco"
    title = "COCO"
    default_out = "export.json"

    @classmethod
    def ours(cls, path: str) -> bool:
        return starts_with(path, HEAD.encode())

    def __init__(self, out: str, options: Options):
        super().__init__(out, options)
        self._images = self._annotations = 0
        try:
            self._file = AtomicFile(out)
            self._side = tempfile.TemporaryFile("w+", encoding="utf-8", dir=os.path.dirname(os.path.abspath(out)))
        except OSError as exc:
            raise write_error(exc, out) from None
        info = json.dumps({"url": "", "version": "1.0", "contributor": "kosmos-cli"})[1:]
        description = json.dumps(os.path.basename(options.results))[1:]
        self._file.file.write(f'{HEAD}{description}, {info},\n"licenses": [],\n"images": [')

    def add(self, image: Image, labels: list[Label], names: list[str]) -> str | None:
        self._images += 1
        entry = {"id": self._images, "file_name": image.name, "width": image.width, "height": image.height}
        try:
            self._file.file.write(("\n" if self._images == 1 else ",\n") + json.dumps(entry, ensure_ascii=False))
            for label in labels:
                self._annotations += 1
                ann = {
                    "id": self._annotations,
                    "image_id": self._images,
                    "category_id": label.cls + 1,
                    "bbox": [label.box[0], label.box[1], label.width, label.height],
                    "area": label.width * label.height,
                    "iscrowd": 0,
                }
                if label.score is not None:
                    ann["score"] = label.score
                self._side.write(("\n" if self._annotations == 1 else ",\n") + json.dumps(ann))
        except OSError as exc:
            raise write_error(exc, self.out) from None
        return None

    def close(self, classes: list[str]) -> None:
        categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(classes)]
        try:
            f = self._file.file
            f.write('\n],\n"annotations": [')
            self._side.seek(0)
            shutil.copyfileobj(self._side, f)
            f.write(f'\n],\n"categories": {json.dumps(categories, ensure_ascii=False)}\n}}\n')
            self._side.close()
            self._file.commit()
        except OSError as exc:
            self.discard()
            raise write_error(exc, self.out) from None

    def discard(self) -> None:
        self._side.close()
        self._file.discard()
