"""Ground truth read into one form: a COCO instances file, a YOLO dataset or a Pascal VOC folder, as `Truth`.

The three formats `kosmos export` writes, read the way their own tools read them:

- COCO: a .json file with `images` (id, file_name, width, height), `annotations` (image_id, category_id, bbox
  [x, y, w, h] in pixels, iscrowd) and `categories` (id, name). Label Studio's COCO export is one of these.
- YOLO: a `data.yaml` (or the folder holding it) with `names` and `train`/`val`/`test` (folders of images, image
  lists or .txt files listing them, below `path`); each image's labels in the `labels/` folder beside its
  `images/` folder, one `class cx cy w h` line (0-1 of the image as displayed) per box.
- Pascal VOC: a folder with `Annotations/` (any depth) of one XML file per image: `size`, and per `object` its
  `name` and `bndbox` (1-based, inclusive pixels). A `difficult` object is kept out of the counts, as VOC does.

Everything becomes pixel boxes [x1, y1, x2, y2) of the image as displayed, the frame of kosmos's results. A truth
that is none of these, cannot be read, or holds a box outside its image is refused in one line (InputError), naming
the file and what to fix.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..inputs.images import display_size, is_image_path

FORMATS = "a COCO instances .json file, a YOLO dataset (data.yaml with labels/) or a Pascal VOC folder (Annotations/)"
SLACK = 0.5  # pixels a box may pass its image's edge by (rounding in other tools); clipped to the edge


@dataclass(frozen=True)
class Box:
    """One true box: its class name, pixels [x1, y1, x2, y2) of the image as displayed; `ignored`: crowd or difficult
    (a prediction on it is neither right nor wrong)."""

    name: str
    box: tuple[float, float, float, float]
    ignored: bool = False


@dataclass
class TruthImage:
    """One image of the truth: its name (a path, '/' separators, as the truth gives it), size, and true boxes."""

    name: str
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)


@dataclass
class Truth:
    """A ground truth of any format: `format` (coco, yolo or voc, the `kosmos export --to` that writes it), its
    class names in order, its images."""

    format: str
    path: str
    names: list[str]
    images: list[TruthImage]


def read(path: str) -> Truth:
    """The truth at `path`, whatever its format (by what it is: a .json file, a data.yaml, a folder of either)."""
    if not os.path.exists(path):
        raise InputError(f"truth not found: {path}: give {FORMATS}")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "data.yaml")):
            return _yolo(os.path.join(path, "data.yaml"))
        if os.path.isdir(os.path.join(path, "Annotations")):
            return _voc(path)
        raise InputError(f"truth {path} is a folder with neither data.yaml nor Annotations/: give {FORMATS}")
    lower = path.lower()
    if lower.endswith((".yaml", ".yml")):
        return _yolo(path)
    if lower.endswith(".json"):
        return _coco(path)
    raise InputError(f"truth {path} is not one of the formats: give {FORMATS}")


# -- COCO --------------------------------------------------------------------------------------------------------
def _coco(path: str) -> Truth:
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except OSError as exc:
        raise InputError(f"cannot read truth {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError):
        raise InputError(f"truth {path} is not JSON: give {FORMATS}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise InputError(f"truth {path} is not a COCO instances file (no images and categories lists): give {FORMATS}")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise InputError(f"truth {path}: annotations is not a list: give a COCO instances file")
    names: dict[Any, str] = {}
    for category in data["categories"]:
        if not isinstance(category, dict) or "id" not in category or not isinstance(category.get("name"), str):
            raise InputError(f"truth {path}: a category without an id and a name: {_shown(category)}")
        names[category["id"]] = category["name"]
    images: dict[Any, TruthImage] = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise InputError(f"truth {path}: an image without an id and a file_name: {_shown(entry)}")
        width, height = _whole(entry.get("width")), _whole(entry.get("height"))
        if width is None or height is None:
            raise InputError(f"truth {path}: image {entry['file_name']} has no width and height above 0")
        images[entry["id"]] = TruthImage(_slashes(entry["file_name"]), width, height)
    for number, ann in enumerate(annotations, 1):
        where = f"truth {path} annotation {number}"
        if not isinstance(ann, dict):
            raise InputError(f"{where} is not an object: {_shown(ann)}")
        image = images.get(ann.get("image_id"))
        if image is None:
            raise InputError(f"{where}: its image_id {_shown(ann.get('image_id'))} is no image of the file")
        if ann.get("category_id") not in names:
            raise InputError(f"{where}: its category_id {_shown(ann.get('category_id'))} is no category of the file")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            raise InputError(f"{where}: its bbox is not 4 numbers [x, y, width, height]: {_shown(bbox)}")
        x, y, w, h = (float(v) for v in bbox)
        box = _inside((x, y, x + w, y + h), image, where)
        image.boxes.append(Box(names[ann["category_id"]], box, bool(ann.get("iscrowd"))))
    return Truth("coco", path, list(names.values()), list(images.values()))


# -- YOLO --------------------------------------------------------------------------------------------------------
def _yolo(path: str) -> Truth:
    try:
        import yaml
    except ImportError:
        raise InputError(f"reading a YOLO dataset needs PyYAML: pip install 'kosmos-ground[eval]' ({path})") from None
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise InputError(f"cannot read truth {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise InputError(f"truth {path} is not YAML: give a YOLO data.yaml") from None
    if not isinstance(data, dict) or "names" not in data:
        raise InputError(f"truth {path} names no classes (no names:): give a YOLO data.yaml")
    raw = data["names"]
    if isinstance(raw, dict) and all(isinstance(k, int) for k in raw) and sorted(raw) == list(range(len(raw))):
        names = [str(raw[i]) for i in range(len(raw))]
    elif isinstance(raw, list):
        names = [str(n) for n in raw]
    else:
        raise InputError(f"truth {path}: names is neither a list nor {{0: name, 1: name, ...}}: {_shown(raw)}")
    here = os.path.dirname(os.path.abspath(path))
    base = data.get("path")
    base = here if not isinstance(base, str) else os.path.join(here, base)
    if not os.path.isdir(base):  # the dataset moved since data.yaml was written: its own folder
        base = here
    found: dict[str, str] = {}  # image file -> its name
    for split in ("train", "val", "test"):
        for image_file, name in _split_images(data.get(split), base, path):
            found.setdefault(os.path.abspath(image_file), name)
    if not found:
        raise InputError(f"truth {path}: no images in its train, val or test folders below {base}")
    images = []
    for image_file, name in sorted(found.items(), key=lambda kv: kv[1]):
        size = display_size(image_file)
        if size is None:
            raise InputError(f"truth {path}: cannot read the image {image_file} (YOLO labels need its size)")
        image = TruthImage(name, *size)
        labels = _label_file(image_file)
        if os.path.isfile(labels):
            image.boxes = list(_yolo_boxes(labels, image, names))
        images.append(image)
    return Truth("yolo", path, names, images)


def _split_images(split: Any, base: str, path: str) -> Iterator[tuple[str, str]]:
    """(image file, its name) for a split of data.yaml: a folder, a .txt list of images, or a list of either. A name
    is the image's path below the split's folder (`images/train/a.jpg` of `train: images/train` is `a.jpg`); for a
    listed image, below its last `images/` folder (else the list's folder)."""
    if split is None:
        return
    for entry in split if isinstance(split, list) else [split]:
        where = os.path.join(base, str(entry))
        if os.path.isdir(where):
            for folder, dirs, files in os.walk(where):
                dirs.sort()
                for file in sorted(files):
                    if is_image_path(file):
                        full = os.path.join(folder, file)
                        yield full, _slashes(os.path.relpath(full, where))
        elif os.path.isfile(where) and where.lower().endswith(".txt"):
            try:
                with open(where, encoding="utf-8-sig") as f:
                    lines = [line.strip() for line in f if line.strip()]
            except OSError as exc:
                raise InputError(f"cannot read {where} (named by {path}): {exc.strerror or exc}") from None
            for line in lines:
                full = line if os.path.isabs(line) else os.path.join(base, line)
                yield full, _below_images(full, os.path.dirname(where))
        else:
            raise InputError(f"truth {path}: {entry} is neither a folder of images nor a .txt list below {base}")


def _below_images(image_file: str, split_folder: str) -> str:
    parts = os.path.abspath(image_file).split(os.sep)
    if "images" in parts:
        at = len(parts) - 1 - parts[::-1].index("images")
        return "/".join(parts[at + 1 :])
    return _slashes(os.path.relpath(image_file, split_folder))


def _label_file(image_file: str) -> str:
    """Ultralytics' rule: the last /images/ of the path becomes /labels/, the extension .txt."""
    parts = os.path.abspath(image_file).split(os.sep)
    if "images" in parts:
        at = len(parts) - 1 - parts[::-1].index("images")
        parts[at] = "labels"
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def _yolo_boxes(labels: str, image: TruthImage, names: list[str]) -> Iterator[Box]:
    try:
        with open(labels, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read truth labels {labels}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"truth {labels} line {number}"
        values = line.split()
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            raise InputError(f"{where} is not 'class cx cy w h' numbers: {line.strip()[:60]!r}") from None
        if len(numbers) != 5:
            raise InputError(f"{where} has {len(numbers)} numbers, not 5 (class cx cy w h; segments are not read)")
        cls, cx, cy, w, h = numbers
        if cls != int(cls) or not 0 <= cls < len(names):
            raise InputError(f"{where}: class {values[0]} is not one of data.yaml's names (0 to {len(names) - 1})")
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise InputError(f"{where}: a box of numbers that are not finite")
        x1, y1 = (cx - w / 2) * image.width, (cy - h / 2) * image.height
        box = _inside((x1, y1, x1 + w * image.width, y1 + h * image.height), image, where)
        yield Box(names[int(cls)], box)


# -- Pascal VOC --------------------------------------------------------------------------------------------------
def _voc(path: str) -> Truth:
    folder = os.path.join(path, "Annotations")
    files = []
    for here, dirs, names_ in os.walk(folder):
        dirs.sort()
        files += [os.path.join(here, n) for n in sorted(names_) if n.lower().endswith(".xml")]
    if not files:
        raise InputError(f"truth {path}: Annotations/ holds no .xml files: give {FORMATS}")
    listed = os.path.join(path, "labels.txt")
    names: dict[str, None] = {}
    if os.path.isfile(listed):  # the class order kosmos export writes; plain VOC has none
        with open(listed, encoding="utf-8-sig") as f:
            names.update((line.strip(), None) for line in f if line.strip())
    images = []
    for file in files:
        image = _voc_image(file, folder)
        names.update((b.name, None) for b in image.boxes)
        images.append(image)
    return Truth("voc", path, list(names), images)


def _voc_image(file: str, folder: str) -> TruthImage:
    where = f"truth {file}"
    try:
        root = ET.parse(file).getroot()
    except OSError as exc:
        raise InputError(f"cannot read {where}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise InputError(f"{where} is not XML ({exc}): give Pascal VOC annotations") from None
    if root.tag != "annotation":
        raise InputError(f"{where} is not a Pascal VOC annotation (its root is <{root.tag}>)")
    width, height = _whole(_int(root.findtext("size/width"))), _whole(_int(root.findtext("size/height")))
    if width is None or height is None:
        raise InputError(f"{where} has no size/width and size/height above 0")
    given = (root.findtext("path") or "").strip()
    filename = (root.findtext("filename") or "").strip()
    if given and not os.path.isabs(given):
        name = given  # kosmos export writes the image's path here
    elif filename:
        name = filename
    else:  # no name inside: the annotation's own path, as an image
        name = os.path.splitext(_slashes(os.path.relpath(file, folder)))[0]
    image = TruthImage(_slashes(name), width, height)
    for number, obj in enumerate(root.iter("object"), 1):
        label = (obj.findtext("name") or "").strip()
        if not label:
            raise InputError(f"{where}: object {number} has no name")
        corners = [obj.findtext(f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")]
        try:
            x1, y1, x2, y2 = (float(v) for v in corners)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"{where}: object {number} ({label}) has no bndbox of 4 numbers") from None
        box = _inside((x1 - 1, y1 - 1, x2, y2), image, f"{where} object {number} ({label})")
        image.boxes.append(Box(label, box, (obj.findtext("difficult") or "0").strip() == "1"))
    return image


# -- shared ------------------------------------------------------------------------------------------------------
def _inside(box: tuple[float, float, float, float], image: TruthImage, where: str) -> tuple[float, float, float, float]:
    """The box, checked: finite, of some area, inside its image (SLACK allowed, then clipped)."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box) or x2 <= x1 or y2 <= y1:
        raise InputError(f"{where}: a box of no area or not numbers: {_rounded(box)}")
    if x1 < -SLACK or y1 < -SLACK or x2 > image.width + SLACK or y2 > image.height + SLACK:
        raise InputError(
            f"{where}: the box {_rounded(box)} is outside its image {image.name} ({image.width}x{image.height}): "
            "fix the box or the image's size"
        )
    return max(0.0, x1), max(0.0, y1), min(float(image.width), x2), min(float(image.height), y2)


def _rounded(box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> int | None:
    return int(value) if _number(value) and value == int(value) and value > 0 else None


def _int(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _slashes(path: str) -> str:
    return path.replace(os.sep, "/").replace("\\", "/")
