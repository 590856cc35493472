"""Where draw and export put the files they write for each result below their output folder.

A local image keeps its path below a common folder (each reader says which); `remote_layout` names the others: a
URL below its host or bucket, a sample of a shard or table below the container's name.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

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
        parts = [url.netloc, *url.path.split("/")]
        ext = os.path.splitext(url.path)[1]
        if url.query:  # another query is another image: its own name
            parts[-1] = os.path.splitext(parts[-1])[0] + "-" + url.query
    safe = [_UNSAFE.sub("_", p).strip(".") or "_" for p in parts if p]
    if ext and not safe[-1].lower().endswith(ext.lower()):
        safe[-1] += ext
    return os.path.join(*safe) if safe else "_"
