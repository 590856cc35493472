"""Synthetic scenes for the toy Kosmos-2: one or two coloured shapes on a grey background.

Importable (the toy-model trainer and the tests use it) and a small CLI:

    python tools/shapes.py OUT_DIR [-n 8] [--seed 0]

writes OUT_DIR/shape_000.png ... and OUT_DIR/truth.jsonl, one line per image:
{"path", "width", "height", "shapes": [{"color", "shape", "box"}]}. Boxes are pixels (x1, y1, x2, y2) of the
image as displayed, x2/y2 exclusive.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kosmos_cli.exports.boxes import iou  # the evaluators and tests measure boxes with it

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
}
SHAPES = ("circle", "square")
CLI_SIZES = ((224, 224), (320, 200), (200, 320), (288, 224))

_ORIENTATION_TAG = 0x0112
# What to do to the displayed image to get the stored pixels, so that exif_transpose undoes it.
_STORE_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in display pixels, x2/y2 exclusive

    @property
    def phrase(self) -> str:
        return f"a {self.color} {self.shape}"


def _background(rng: random.Random, width: int, height: int, noisy: bool) -> Image.Image:
    grey = rng.randint(80, 180)
    if not noisy:
        return Image.new("RGB", (width, height), (grey, grey, grey))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(grey, rng.uniform(8, 24), (height, width))
    pixels = np.repeat(noise.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return Image.fromarray(pixels, "RGB")


def _place(rng: random.Random, width: int, height: int, placed: list[tuple[int, int, int, int]]):
    """A random box that keeps a gap from the boxes already placed and starts clearly left or right of them."""
    short = min(width, height)
    for _ in range(200):
        side = int(rng.uniform(0.2, 0.4) * short)
        x1 = rng.randint(0, width - side)
        y1 = rng.randint(0, height - side)
        box = (x1, y1, x1 + side, y1 + side)
        gap = 0.04 * short
        if all(
            (box[0] >= o[2] + gap or box[2] + gap <= o[0] or box[1] >= o[3] + gap or box[3] + gap <= o[1])
            and abs(box[0] - o[0]) >= 0.1 * width
            for o in placed
        ):
            return box
    return None


def make_scene(
    rng: random.Random, width: int, height: int, n: int | None = None, noisy: bool | None = None
) -> tuple[Image.Image, list[Shape]]:
    """One or two solid shapes of distinct colours; shapes sorted left to right by x1."""
    if n is None:
        n = rng.randint(1, 2)
    if noisy is None:
        noisy = rng.random() < 0.5
    while True:
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(n):
            box = _place(rng, width, height, boxes)
            if box is None:
                break
            boxes.append(box)
        if len(boxes) == n:
            break
    colors = rng.sample(sorted(COLORS), n)
    shapes = sorted(
        (Shape(color, rng.choice(SHAPES), box) for color, box in zip(colors, boxes)), key=lambda s: s.box[0]
    )
    img = _background(rng, width, height, noisy)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        x1, y1, x2, y2 = s.box
        if s.shape == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=COLORS[s.color])
        else:
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=COLORS[s.color])
    return img, shapes


def caption(shapes) -> str:
    """The grounded caption, objects left to right; the processor adds <object> tags from bboxes=."""
    phrases = " and".join(f"<phrase> {s.phrase}</phrase>" for s in shapes)
    return f"<grounding> An image of{phrases}."


def colour_in(text: str) -> str | None:
    """The first of COLORS that `text` names as a word ("a red circle." -> "red"), or None."""
    return next((c for c in COLORS if c in text.replace(".", " ").split()), None)


def boxed(entities, shapes, threshold: float = 0.5) -> int:
    """How many of a scene's `shapes` a record's ground `entities` box: a box of the shape's colour with an IoU of at
    least `threshold` with it."""
    found = [(colour_in(e["phrase"]), b) for e in entities for b in e["boxes_px"]]
    return sum(any(c == s.color and iou(b, s.box) >= threshold for c, b in found) for s in shapes)


def normalized_boxes(shapes, width, height) -> list[tuple[float, float, float, float]]:
    return [(s.box[0] / width, s.box[1] / height, s.box[2] / width, s.box[3] / height) for s in shapes]


def save_rotated_jpeg(img: Image.Image, path, orientation: int) -> None:
    """Write a JPEG whose stored pixels are rotated, with an EXIF Orientation tag that displays them as `img`."""
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = orientation
    img.transpose(_STORE_AS[orientation]).save(path, "JPEG", quality=95, exif=exif.tobytes())


def write_scenes(out_dir, n: int = 8, seed: int = 0) -> Path:
    """Write n scenes as PNGs plus truth.jsonl into out_dir; returns the truth file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    truth = out / "truth.jsonl"
    with truth.open("w") as f:
        for i in range(n):
            width, height = CLI_SIZES[i % len(CLI_SIZES)]
            img, shapes = make_scene(rng, width, height)
            path = out / f"shape_{i:03d}.png"
            img.save(path)
            row = {"path": str(path), "width": width, "height": height, "shapes": [asdict(s) for s in shapes]}
            f.write(json.dumps(row) + "\n")
    return truth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic shape scenes and their ground truth.")
    parser.add_argument("out_dir")
    parser.add_argument("-n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_scenes(args.out_dir, args.n, args.seed))


if __name__ == "__main__":
    main()
