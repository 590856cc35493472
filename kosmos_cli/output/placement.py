"""Where draw and export put the files they write for each result below their output folder, and how they say
that one cannot be written.

A local image keeps its path below a common folder (each reader says which); `remote_layout` names the others: a
URL below its host or bucket, a sample of a shard or table below the container's name. `fit` shortens what the file
system could not hold (a 300-character key, a URL path 30 folders deep), so no name is ever the end of a draw or an
export: a name too long is cut and ends with a short hash of the whole, so it stays unique and recognisable.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from urllib.parse import urlsplit

from ..errors import OutputError, redact

# Bytes a file name may have: NAME_MAX (255 on common file systems) less room for what is added to it (`-2` for a
# name taken, `.PID.tmp` while it is written, an extension changed).
MAX_NAME = 200
MAX_LAYOUT = 1024  # bytes of a whole relative layout: PATH_MAX (4096) less room for the output folder's own path

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")
_CONTAINER_ENDINGS = (".tar.gz", ".tgz", ".tar", ".parquet")


def remote_layout(source: str, member: tuple[str, str] | None) -> str:
    """A relative file name for a remote image (below its host or bucket) or a container's sample (below the
    container's name): safe characters only, no `..`."""
    if member is not None:
        container, key = member
        shard = os.path.basename(container.rstrip("/"))
        for ending in _CONTAINER_ENDINGS:
            if shard.lower().endswith(ending):
                shard = shard[: -len(ending)]
                break
        parts = [shard, *key.split("/")]
        ext = ""
    else:
        url = urlsplit(source)
        host = url.netloc.rpartition("@")[2]  # a URL's user:password never names a file
        parts = [host, *url.path.split("/")]
        ext = os.path.splitext(url.path)[1]
        if url.query:  # another query is another image: its own name (a signature or token left out)
            parts[-1] = os.path.splitext(parts[-1])[0] + "-" + redact("?" + url.query)[1:]
    safe = [_UNSAFE.sub("_", p).strip(".") or "_" for p in parts if p]
    if ext and not safe[-1].lower().endswith(ext.lower()):
        safe[-1] += ext
    return os.path.join(*safe) if safe else "_"


def fit(layout: str) -> str:
    """`layout` (a relative path, `/`-separated) with each name at most MAX_NAME bytes and the whole at most
    MAX_LAYOUT: unchanged when it fits. A name too long keeps its beginning and extension and gets a short hash of
    the whole name; a path too deep has its folders folded into one such name."""
    parts = [_short(p) for p in layout.replace(os.sep, "/").split("/")]
    if len("/".join(parts).encode("utf-8", "surrogateescape")) > MAX_LAYOUT:
        parts = [_short("_".join(parts[:-1]), whole=layout), parts[-1]]
    return "/".join(parts)


def _short(name: str, whole: str | None = None) -> str:
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_NAME:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext) > 16 or not ext[1:].isalnum():
        stem, ext = name, ""
    digest = hashlib.sha1((whole or name).encode("utf-8", "surrogateescape")).hexdigest()[:10]
    room = MAX_NAME - len(ext.encode("utf-8", "surrogateescape")) - len(digest) - 1
    cut = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")  # no character cut in half
    return f"{cut}-{digest}{ext}"


def write_error(exc: OSError, path: str, option: str) -> OutputError:
    """One line for a file of `option`'s folder (draw's --out-dir, export's OUT) that cannot be written, with the
    advice that fits the cause."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"cannot write {path}: {exc.strerror}: choose another {option} or free some space")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: {exc.strerror}: choose another {option} or fix its permissions")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")
