"""The images the page shows: made on demand from wherever a record's image lives, in the displayed frame.

Any path a record can name is opened as the run opened it (locations.open_image: local files, URLs, buckets,
`SHARD.tar#KEY`, `TABLE.parquet#KEY`), EXIF orientation applied, so the pixel boxes of the record land where the
browser draws them. Each is sent as a JPEG no larger than the size asked (a few fixed sizes) and kept in a cache
bounded in bytes; at most a few images are decoded at once, however many the page asks for.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict

from ..inputs import locations

SIZES = (256, 512, 1024, 2048)  # the longest side of an image as sent
DEFAULT_CACHE_MB = 64


class Unshowable(Exception):
    """The image cannot be shown; the message says why (the record's image is missing, not an image, ...)."""


class Thumbnails:
    """JPEG bytes of images by (where the image is, size), made on demand, the last ones kept up to `cache_bytes`."""

    def __init__(self, cache_bytes: int = DEFAULT_CACHE_MB << 20, fetch: locations.FetchOptions | None = None):
        self.cache_bytes = cache_bytes
        self.fetch = fetch or locations.FetchOptions(timeout=10.0, retries=1)
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._decoding = threading.BoundedSemaphore(max(2, min(4, os.cpu_count() or 2)))

    @property
    def held(self) -> int:
        """Bytes the cache holds now."""
        return self._held

    def get(self, source: str, size: int) -> bytes:
        """The image at `source` (as it can be opened) as a JPEG whose longest side is at most `size`."""
        key = (source, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with self._decoding:
            data = _make(source, size, self.fetch)
        with self._lock:
            if key not in self._cache and len(data) <= self.cache_bytes:
                self._cache[key] = data
                self._held += len(data)
                while self._held > self.cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._held -= len(dropped)
        return data


def _make(source: str, size: int, fetch: locations.FetchOptions) -> bytes:
    from PIL import Image

    loaded = locations.open_image(source, fetch, draft=size)
    if loaded.image is None:
        raise Unshowable(loaded.error or "cannot be read")
    image = loaded.image
    image.thumbnail((size, size), Image.Resampling.LANCZOS)  # aspect ratio kept; never enlarged
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, subsampling=0)  # 4:4:4: no colour bleeding at sharp edges
    return out.getvalue()
