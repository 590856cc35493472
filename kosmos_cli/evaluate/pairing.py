"""Which image of the results is which image of the truth: by path, relative to a root.

A results image is named as `kosmos export` names it (`exports.source`): relative to `--root` when one is given,
else as recorded. A truth image is named as its file says (COCO's file_name, the path below a YOLO images/ folder, a
VOC annotation's path or filename); an absolute one below `--root` is made relative to it. Two names are the same
image when they are equal, or when one is the other with folders in front ("photos/a.png" is "a.png" of a truth
made in photos/), and no other image of the results fits as well: ambiguous names are left unpaired, never guessed.
"""

from __future__ import annotations

import os
from collections import defaultdict


class Names:
    """The names of the results' images, to look truth names up in."""

    def __init__(self, names):
        self._exact: dict[str, str] = {}
        self._by_base: dict[str, list[str]] = defaultdict(list)
        for name in names:
            key = _key(name)
            self._exact.setdefault(key, name)
            self._by_base[key.rsplit("/", 1)[-1]].append(key)
        self._taken: set[str] = set()

    def pair(self, truth_name: str, root: str | None) -> str | None:
        """The results' name of the truth image `truth_name`, or None when none (or more than one) fits; each results
        image pairs with one truth image only."""
        key = _key(truth_name)
        if root is not None and os.path.isabs(truth_name):
            rel = os.path.relpath(truth_name, os.path.abspath(root))
            if not rel.startswith(os.pardir):
                key = _key(rel)
        found = key if key in self._exact else self._by_suffix(key)
        if found is None or found in self._taken:
            return None
        self._taken.add(found)
        return self._exact[found]

    def paired(self) -> set[str]:
        """The results' names paired so far."""
        return {self._exact[key] for key in self._taken}

    def _by_suffix(self, key: str) -> str | None:
        fits = [
            name
            for name in self._by_base.get(key.rsplit("/", 1)[-1], ())
            if name.endswith("/" + key) or key.endswith("/" + name)
        ]
        return fits[0] if len(set(fits)) == 1 else None


def _key(name: str) -> str:
    """A name compared by its parts: '/' separators, no './', no doubled or trailing slashes."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return ("/" if name.startswith("/") else "") + "/".join(parts)
