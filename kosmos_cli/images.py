"""Open an image as it is displayed: EXIF orientation applied, any mode made RGB, size guarded.

A failure is a value (`Loaded.error`), never an exception: no file, however bad, may stop a run.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit (2 x MAX_IMAGE_PIXELS)
MODEL_SIDE = 224  # Kosmos-2 squashes every image to 224 x 224
_ORIENTATION = 0x0112
NUL_IN_PATH = "the path contains a NUL byte (paths from find -print0 need --null)"


@dataclass
class Loaded:
    """An opened image, or why it could not be opened. width/height are the size as displayed."""

    image: Image.Image | None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def is_image_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> Loaded:
    """Open `path` as an RGB image as displayed.

    `draft`: when set, a JPEG much larger than that many pixels a side is decoded at a reduced scale (Pillow's
    draft mode: 1/2, 1/4 or 1/8, never below `draft` on either side). width/height stay the full displayed size.
    """
    if "\0" in path:
        return Loaded(None, error=NUL_IN_PATH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return _decode(img, max_pixels, draft)
    except Image.DecompressionBombError as exc:
        return Loaded(None, error=f"image too large to decode safely: {exc}")
    except Image.DecompressionBombWarning as exc:
        return Loaded(None, error=f"image too large to decode safely: {exc}")
    except FileNotFoundError:
        return Loaded(None, error="file not found")
    except IsADirectoryError:
        return Loaded(None, error="is a directory, not an image")
    except PermissionError:
        return Loaded(None, error="permission denied")
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold (fsnames.py)
        return Loaded(None, error="file not found: the path is not valid Unicode")
    except Image.UnidentifiedImageError:
        size = _size_or_none(path)
        return Loaded(None, error="empty file" if size == 0 else "not an image Pillow can read")
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        return Loaded(None, error=f"cannot decode image: {exc}")


def _decode(img: Image.Image, max_pixels: int, draft: int | None) -> Loaded:
    width, height = img.size
    if width * height > max_pixels:
        return Loaded(None, error=f"image has {width * height} pixels, more than the limit of {max_pixels}")
    orientation = img.getexif().get(_ORIENTATION, 1)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if draft and img.format == "JPEG" and min(img.size) >= 2 * draft:
        scale = min(img.size) // draft  # 2, 4 or 8 when draft mode can use it
        img.draft("RGB", (max(img.size[0] // scale, 1), max(img.size[1] // scale, 1)))
    img.load()
    out = ImageOps.exif_transpose(img) if orientation != 1 else img
    return Loaded(to_rgb(out), width, height)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is laid on white; 16-bit and float greys are scaled, not clipped."""
    if img.mode == "RGB":
        return img.copy() if img.readonly else img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def file_stat(path: str) -> tuple[int | None, float | None]:
    """(size in bytes, modification time) of `path`, or (None, None) when it cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None, None
    return st.st_size, st.st_mtime


def display_size(path: str) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF orientation applied), from the header alone; None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width
                return width, height
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def _size_or_none(path: str) -> int | None:
    return file_stat(path)[0]
