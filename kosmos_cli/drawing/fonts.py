"""The font labels are drawn in: a Unicode TrueType font when the system has one, else Pillow's default.

Pillow's default font covers Latin letters only, so a phrase in another script (CJK, and on older Pillow even
é or ü) would be drawn as empty boxes. `KOSMOS_FONT` names the font to use instead: a font file, or the file name
of a font installed in one of FONT_DIRS.
"""

from __future__ import annotations

import functools
import logging
import os

from PIL import ImageFont

log = logging.getLogger("kosmos_cli")

FONT_ENV = "KOSMOS_FONT"
# Most scripts first: Noto Sans CJK also covers Latin, Greek and Cyrillic; DejaVu Sans covers Latin, Greek,
# Cyrillic, Arabic, Hebrew and more, but no CJK; the rest are the usual Latin-plus fonts of other systems.
FONT_NAMES = (
    "NotoSansCJK-Regular.ttc",
    "NotoSansCJKsc-Regular.otf",
    "NotoSansCJKjp-Regular.otf",
    "NotoSansSC-Regular.otf",
    "wqy-zenhei.ttc",
    "wqy-microhei.ttc",
    "Arial Unicode.ttf",
    "arialuni.ttf",
    "msyh.ttc",
    "DejaVuSans.ttf",
    "NotoSans-Regular.ttf",
    "FreeSans.ttf",
    "LiberationSans-Regular.ttf",
    "Arial.ttf",
    "segoeui.ttf",
)
FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",  # Linux, BSD
    "/System/Library/Fonts",
    "/Library/Fonts",
    "~/Library/Fonts",  # macOS
    os.path.join(os.environ.get("WINDIR", "C:\\Windows"), "Fonts"),  # Windows
)


@functools.lru_cache(maxsize=16)
def label_font(size: int):
    """A font of `size` pixels for labels: the Unicode font of `font_path()`, else Pillow's default."""
    path = font_path()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except (OSError, ValueError, ImportError) as exc:  # a damaged file, or Pillow without FreeType
            log.warning("cannot use the font %s (%s): labels use Pillow's default font", path, exc)
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


@functools.lru_cache(maxsize=1)
def font_path() -> str | None:
    """The font file labels are drawn in: $KOSMOS_FONT, else the first of FONT_NAMES found in FONT_DIRS."""
    wanted = os.environ.get(FONT_ENV, "").strip()
    if wanted:
        path = os.path.expanduser(wanted)
        if os.path.isfile(path):
            return path
        if os.path.basename(path) == path:  # a file name: look for it where fonts are installed
            found = find_font(FONT_DIRS, (path,))
            if found:
                return found
        log.warning("%s=%s: no such font file; labels use the font found on this system, if any", FONT_ENV, wanted)
    return find_font(FONT_DIRS)


def find_font(dirs=FONT_DIRS, names=FONT_NAMES) -> str | None:
    """The path of the first of `names` (any case) found below any of `dirs`; None when there is none."""
    rank = {name.lower(): i for i, name in enumerate(names)}
    best: tuple[int, str] | None = None
    for top in dirs:
        top = os.path.expanduser(top)
        if not os.path.isdir(top):
            continue
        for folder, subfolders, files in os.walk(top):
            subfolders.sort()
            for file in sorted(files):
                i = rank.get(file.lower())
                if i is not None and (best is None or i < best[0]):
                    best = (i, os.path.join(folder, file))
                    if i == 0:
                        return best[1]
    return best[1] if best else None
