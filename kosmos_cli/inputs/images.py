"""Open an image as it is displayed: EXIF orientation applied, any mode made RGB, size guarded.

A failure is a value (`Loaded.error`), never an exception: no file, however bad, may stop a run. A named pipe, a
socket or a device is never opened the blocking way (`open_regular`): it is "not a regular file", at once.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit (2 x MAX_IMAGE_PIXELS)
MODEL_SIDE = 224  # Kosmos-2 squashes every image to 224 x 224
_ORIENTATION = 0x0112
NUL_IN_PATH = "the path contains a NUL byte (paths from find -print0 need --null)"
NOT_REGULAR = "not a regular file"  # a named pipe, a socket, a device: never opened the blocking way
LARGE_PIXELS = 1 << 24  # a decode of more pixels than this (64 MB as RGBA) is a large one...
LARGE_DECODES = 2  # ...and at most this many large decodes run at once, however many loader threads there are
_large = threading.BoundedSemaphore(LARGE_DECODES)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class Loaded:
    """An opened image, or why it could not be opened. width/height are the size as displayed."""

    image: Image.Image | None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def is_image_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


class NotRegular(OSError):
    """The path names something other than a regular file or a folder: a named pipe (FIFO), a socket, a device."""

    def __init__(self, path: str):
        super().__init__(errno.EINVAL, NOT_REGULAR, path)


def is_special(path: str) -> bool:
    """Whether `path` names something there that is neither a regular file nor a folder (links followed): a FIFO, a
    socket, a device. Looked at without opening it."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def open_regular(path: str) -> BinaryIO:
    """`path` opened for reading its bytes, when it is a regular file; NotRegular when it is a FIFO, a socket or a
    device (IsADirectoryError for a folder, and what `open` raises otherwise).

    Nothing waits: it is looked at first (a FIFO with no writer would block `open` forever, /dev/zero never ends),
    then opened without blocking and looked at once more, so a file swapped for a FIFO in between is caught too."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if not stat.S_ISREG(mode):
        raise NotRegular(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path) if stat.S_ISDIR(mode) else NotRegular(path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_image(
    path: str, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None, data: bytes | None = None
) -> Loaded:
    """Open `path` as an RGB image as displayed; from `data`, its bytes, when they were read already (a remote
    image, a WebDataset sample, a Parquet row: locations.py).

    `draft`: when set, the caller needs no more than about that many pixels a side, so memory stays bounded: a JPEG
    is decoded at a reduced scale (Pillow's draft mode: 1/2, 1/4 or 1/8), and any image is then shrunk by a whole
    factor right after decoding, its shorter side to between `draft` and 2 x `draft` pixels (the aspect ratio
    kept). width/height stay the full displayed size. Without it (drawing) the image comes at full size.
    At most LARGE_DECODES decodes of more than LARGE_PIXELS pixels run at once.
    """
    if data is None and "\0" in path:
        return Loaded(None, error=NUL_IN_PATH)
    if data is not None and not data:
        return Loaded(None, error="empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _opened(path, data) as f, Image.open(f) as img:
                return _decode(img, max_pixels, draft)
    except NotRegular:
        return Loaded(None, error=NOT_REGULAR)
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
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold (inputs/names.py)
        return Loaded(None, error="file not found: the path is not valid Unicode")
    except Image.UnidentifiedImageError:
        size = _size_or_none(path) if data is None else len(data)
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
    large = img.size[0] * img.size[1] > LARGE_PIXELS  # the size to decode, after draft mode
    if large:
        _large.acquire()
    try:
        img.load()
        if draft:
            small = shrink(img, draft)
            if small is not img:  # a new image without EXIF: turn it by hand
                return Loaded(
                    to_rgb(small.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else small),
                    width,
                    height,
                )
        out = ImageOps.exif_transpose(img) if orientation != 1 else img
        return Loaded(to_rgb(out), width, height)
    finally:
        if large:
            _large.release()


def shrink(img: Image.Image, side: int) -> Image.Image:
    """`img` reduced by a whole factor (box filter, aspect ratio kept), its shorter side to between `side` and
    2 x `side` pixels. Returns `img` itself when there is nothing to reduce."""
    factor = min(img.size) // side
    if factor < 2:
        return img
    fx = fy = factor
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "PA"):
        img = img.convert("L" if mode == "1" else "RGBA")
    if img.mode in ("RGBA", "LA"):  # premultiplied, so transparent pixels lend no colour to their neighbours
        premultiplied = "RGBa" if img.mode == "RGBA" else "La"
        return img.convert(premultiplied).reduce((fx, fy)).convert(img.mode)
    if img.mode.startswith("I;16"):  # reduce has no 16-bit mode: through 32-bit, values kept
        return img.convert("I").reduce((fx, fy)).convert(img.mode)
    try:
        return img.reduce((fx, fy))
    except ValueError:  # a mode reduce does not take
        return to_rgb(img).reduce((fx, fy))


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


def display_size(path: str, data: bytes | None = None) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF orientation applied), from the header alone (of `data`, the image's
    bytes, when given); None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _opened(path, data) as f, Image.open(f) as img:
                width, height = img.size
                if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width
                return width, height
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def _opened(path: str, data: bytes | None) -> BinaryIO:
    return open_regular(path) if data is None else io.BytesIO(data)


def _size_or_none(path: str) -> int | None:
    return file_stat(path)[0]
