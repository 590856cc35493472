"""The images the page shows: made on demand from wherever a record's image lives, in the displayed frame.

Any path a record can name is opened as the run opened it (locations.open_image: local files, URLs, buckets,
`SHARD.tar#KEY`, `TABLE.parquet#KEY`), EXIF orientation applied, so the pixel boxes of the record land where the
browser draws them. Each is sent as a JPEG no larger than the size asked (a few fixed sizes) and kept in a cache
bounded in bytes; at most a few images are decoded at once, however many the page asks for.

Nothing waits forever: a local file (or the container of a sample) that is not a regular file (a named pipe, a
socket, a device) is refused before it is opened, found without blocking; and a request waits at most `wait`
seconds for its image. An image still being made then is left to finish on its own thread, no longer counted
among the few decoded at once, so one slow image (a hung mount) never holds up the others.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections import OrderedDict

from ..inputs import locations

SIZES = (256, 512, 1024, 2048)  # the longest side of an image as sent
DEFAULT_CACHE_MB = 64
DEFAULT_WAIT = 15.0  # seconds a request waits for its image


class Unshowable(Exception):
    """The image cannot be shown; the message says why (the record's image is missing, not an image, ...)."""


class Slow(Exception):
    """The image took longer than a request waits for it; the message says so."""


class _Making:
    """One image being made, on a thread of its own; requests for the same one wait on it together."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.data: bytes | None = None
        self.error: Exception | None = None
        self.counted = True  # among the decodes at once (until it finishes, or a request gives up on it)


class Thumbnails:
    """JPEG bytes of images by (where the image is, size), made on demand, the last ones kept up to `cache_bytes`."""

    def __init__(
        self,
        cache_bytes: int = DEFAULT_CACHE_MB << 20,
        fetch: locations.FetchOptions | None = None,
        wait: float = DEFAULT_WAIT,
        at_once: int | None = None,
    ):
        self.cache_bytes = cache_bytes
        self.fetch = fetch or locations.FetchOptions(timeout=10.0, retries=1)
        self.wait = wait
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._making: dict[tuple[str, int], _Making] = {}
        self._slots = at_once or max(2, min(4, os.cpu_count() or 2))  # decodes at once
        self._busy = 0
        self._freed = threading.Condition(self._lock)

    @property
    def held(self) -> int:
        """Bytes the cache holds now."""
        return self._held

    def get(self, source: str, size: int) -> bytes:
        """The image at `source` (as it can be opened) as a JPEG whose longest side is at most `size`.
        Unshowable when it cannot be shown, Slow when it is not made within `wait` seconds."""
        key = (source, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            making = self._making.get(key)
            if making is None:
                making = self._making[key] = _Making()
                threading.Thread(target=self._make, args=(key, making), name="kosmos-view-image", daemon=True).start()
        if not making.done.wait(self.wait):
            with self._lock:
                if making.counted:  # it no longer holds a place among the decodes at once
                    making.counted = False
                    self._busy -= 1
                    self._freed.notify()
            raise Slow(f"the image took more than {self.wait:g}s to read: try again later")
        if making.error is not None:
            raise making.error
        assert making.data is not None
        return making.data

    def _make(self, key: tuple[str, int], making: _Making) -> None:
        with self._lock:
            while self._busy >= self._slots:
                self._freed.wait()
            self._busy += 1
        try:
            making.data = _make(key[0], key[1], self.fetch)
        except Exception as exc:  # Unshowable; anything else is a bug, raised again where the image was asked for
            making.error = exc
        with self._lock:
            if making.counted:
                making.counted = False
                self._busy -= 1
                self._freed.notify()
            del self._making[key]
            data = making.data
            if data is not None and key not in self._cache and len(data) <= self.cache_bytes:
                self._cache[key] = data
                self._held += len(data)
                while self._held > self.cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._held -= len(dropped)
        making.done.set()


def regular(path: str) -> str | None:
    """Why the local file at `path` cannot be read as an image without waiting (None: it can): a named pipe, a
    socket or a device is found by what `stat` says of it, never opened."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None  # missing, no permission, a NUL in the name: the opening says it as the run says it
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    what = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({what})"


def _make(source: str, size: int, fetch: locations.FetchOptions) -> bytes:
    from PIL import Image

    member = locations.split_member(source)
    file = member[0] if member is not None else source  # a sample's container: a shard, a table
    if not locations.is_remote(file):
        refused = regular(locations.local_path(file))
        if refused is not None:
            raise Unshowable(refused)
    loaded = locations.open_image(source, fetch, draft=size)
    if loaded.image is None:
        raise Unshowable(loaded.error or "cannot be read")
    image = loaded.image
    image.thumbnail((size, size), Image.Resampling.LANCZOS)  # aspect ratio kept; never enlarged
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, subsampling=0)  # 4:4:4: no colour bleeding at sharp edges
    return out.getvalue()
