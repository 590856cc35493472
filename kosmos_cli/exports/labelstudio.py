"""Label Studio: a tasks JSON file, one task per image with the model's boxes as `predictions`, and beside it the
labelling config that matches them (`tasks.json` -> `tasks.config.xml`).

Each box is a `rectanglelabels` result in percent of the image as displayed (EXIF orientation applied; browsers
show images that way), with its score. The image's location is `--image-root` (a URL prefix such as
`https://host/photos/`, or Label Studio's local-files path `/data/local-files/?d=photos/`) followed by the image's
path relative to `--root` (URL-quoted); without `--image-root`, the path itself. Streamed: one task at a time.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ..output.atomic import AtomicFile, atomic_write
from .base import Options, Writer, starts_with, write_error, xml_text
from .boxes import Label
from .source import Image

FROM_NAME, TO_NAME = "label", "image"


def config_path(out: str) -> str:
    return os.path.splitext(out)[0] + ".config.xml"


class LabelStudio(Writer):
    name = "labelstudio"
    title = "Label Studio"
    default_out = "tasks.json"
    takes = ("image_root",)

    @classmethod
    def targets(cls, out: str) -> list[str]:
        return [out, config_path(out)]

    @classmethod
    def ours(cls, path: str) -> bool:
        if path.endswith(".config.xml"):
            return starts_with(path, f'<View>\n  <Image name="{TO_NAME}"'.encode())
        return starts_with(path, b'[\n{"data": {"image": ', b"[\n]")

    def __init__(self, out: str, options: Options):
        super().__init__(out, options)
        self._tasks = 0
        try:
            self._file = AtomicFile(out)
        except OSError as exc:
            raise write_error(exc, out) from None
        self._file.file.write("[")

    def location(self, image: Image) -> str:
        if self.options.image_root is None:
            return image.name
        return self.options.image_root + quote(image.name, safe="/")

    def add(self, image: Image, labels: list[Label], names: list[str]) -> str | None:
        self._tasks += 1
        w, h = image.width, image.height
        results = []
        for n, label in enumerate(labels, 1):
            x1, y1, x2, y2 = label.box
            result = {
                "id": f"{self._tasks}-{n}",
                "type": "rectanglelabels",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "value": {
                    "x": 100 * x1 / w,
                    "y": 100 * y1 / h,
                    "width": 100 * (x2 - x1) / w,
                    "height": 100 * (y2 - y1) / h,
                    "rotation": 0,
                    "rectanglelabels": [names[label.cls]],
                },
            }
            if label.score is not None:
                result["score"] = label.score
            results.append(result)
        scores = [label.score for label in labels if label.score is not None]
        prediction: dict[str, Any] = {"model_version": image.model or "kosmos-2", "result": results}
        if scores:
            prediction["score"] = round(sum(scores) / len(scores), 4)
        task = {"data": {"image": self.location(image), "path": image.path}, "predictions": [prediction]}
        try:
            self._file.file.write(("\n" if self._tasks == 1 else ",\n") + json.dumps(task, ensure_ascii=False))
        except OSError as exc:
            raise write_error(exc, self.out) from None
        return None

    def close(self, classes: list[str]) -> None:
        config = config_path(self.out)
        lines = [
            "<View>",
            f'  <Image name="{TO_NAME}" value="$image"/>',
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">',
        ]
        lines += [f"    <Label value={quoteattr(xml_text(name))}/>" for name in classes]
        lines += ["  </RectangleLabels>", "</View>"]
        try:
            self._file.file.write("\n]\n")
            self._file.commit()
            with atomic_write(config, sync=False) as f:
                f.write("\n".join(lines) + "\n")
        except OSError as exc:
            self.discard()
            raise write_error(exc, self.out) from None

    def discard(self) -> None:
        self._file.discard()

    def written(self) -> list[str]:
        return [self.out, config_path(self.out)]
