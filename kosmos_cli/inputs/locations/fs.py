"""Images in object storage and other filesystems fsspec knows: s3://, gs://, az://, hf://, and any protocol whose
fsspec package is installed.

A folder (a prefix) is walked recursively in sorted order, hidden entries skipped, as a local one; a glob is
matched; a manifest is read where it lies, its relative paths resolving against its remote folder; anything else
is one image. Each item's path is the full URL, and its `stat` (size, modification time) comes from the listing,
so resume tells a changed object without asking the store once per image.

Credentials and endpoints come from where each protocol's own library looks (the environment, its config files,
the machine's role; fsspec's `FSSPEC_<PROTOCOL>_<OPTION>` variables), never from our options. fsspec caches one
filesystem instance per protocol and options, per process and thread, so the loader workers, each on its own
thread, read through instances of their own.

What fails before a model loads (`check_remote`) is a one-line UsageError or InputError; what fails reading one
image (`read_remote`) is `Unreadable`, that image's error record.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from ...errors import InputError, UsageError
from ..images import is_image_path
from ..listing import MANIFEST_EXTENSIONS, OUR_FOLDERS, Columns, Item, Unlisted
from .base import FetchOptions, Unreadable, scheme
from .manifests import read_manifest

log = logging.getLogger("kosmos_cli")

# protocol -> (the package that brings it, the extra of ours that installs it)
PACKAGES = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
    "adl": ("adlfs", "azure"),
}
# protocol -> where its library finds credentials (what a permission error points at)
CREDENTIALS = {
    "s3": "AWS credentials come from the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), "
    "~/.aws/credentials and ~/.aws/config, or the machine's role; another endpoint from AWS_ENDPOINT_URL_S3",
    "gs": "Google Cloud credentials come from GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default "
    "login`, or the machine's service account",
    "az": "Azure credentials come from the environment (AZURE_STORAGE_CONNECTION_STRING, or "
    "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or a service principal's "
    "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET) or `az login`",
    "hf": "Hugging Face credentials come from HF_TOKEN in the environment or `hf auth login`",
}
_SAME_CREDENTIALS = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "time_modified", "created")
_GLOB_CHARS = set("*?[")


def check_remote(url: str) -> None:
    """Before a model loads: UsageError when the protocol's package is missing or nothing is at `url` (no object,
    no prefix, no glob match); InputError when the store refuses us (credentials, permissions)."""
    fs, path = filesystem(url)
    try:
        if _GLOB_CHARS & set(path):
            if not fs.glob(path):
                raise UsageError(f"no files match {url!r}: check the pattern (quote it so the shell leaves it)")
            return
        fs.invalidate_cache(path)
        fs.info(path)
    except FileNotFoundError:
        raise UsageError(f"input not found: {url!r}: check the path") from None
    except UsageError:
        raise
    except Exception as exc:  # the stores' libraries raise their own types (botocore, google.auth, azure, ...)
        raise InputError(f"cannot read {url}: {_why(exc, url)}") from None


def expand_remote(
    url: str, columns: Columns = Columns(), unseen: Unlisted | None = None, fetch: FetchOptions = FetchOptions()
) -> Iterator[Item]:
    """The items `url` names: the images under a folder or prefix, the matches of a glob, the rows of a manifest,
    or the one image it is. `unseen` gets the folders that could not be listed and the manifest rows skipped;
    `fetch.max_bytes` caps the images in a table's rows."""
    unlisted = unseen.places if unseen is not None else None
    fs, path = filesystem(url)
    fs.invalidate_cache()  # a listing as the store has it now, not as an earlier run in this process saw it
    name = _namer(url, path)
    if _GLOB_CHARS & set(path):
        literal = path[: min(path.find(c) for c in _GLOB_CHARS if c in path)].rpartition("/")[0]
        matches = fs.glob(path, detail=True)
        for found in sorted(matches):
            if _hidden(found[len(literal) :], path[len(literal) :]):
                continue
            info = matches[found]
            if info.get("type") == "directory":
                yield from _walk(fs, found, name, unlisted)
            elif is_image_path(found):
                yield Item(name(found), stat=stat_of(info))
        return
    try:
        info = fs.info(path)
    except FileNotFoundError:
        yield Item(url)  # gone since it was checked: its error record says so
        return
    if info.get("type") == "directory":
        yield from _walk(fs, path, name, unlisted)
    elif path.lower().endswith(MANIFEST_EXTENSIONS):
        yield from read_manifest(url, columns, fs.open, unseen, fetch)
    else:
        yield Item(url, stat=stat_of(info))  # named explicitly: tried whatever its extension


def remote_stat(url: str) -> tuple[int | None, float | None]:
    """(size, modification time) of the object at `url` as the store tells it now; (None, None) when it cannot."""
    try:
        fs, path = filesystem(url)
        fs.invalidate_cache(path)
        info = fs.info(path)
    except Exception:  # missing, refused, no package: its read fails with the reason, in its error record
        return None, None
    return stat_of(info)


def read_remote(url: str, fetch: FetchOptions = FetchOptions()) -> bytes:
    """The bytes of the object at `url`: its size checked first against the cap, the whole read bounded by the
    fetch timeout (on filesystems fsspec runs asynchronously: s3, gs, az). Unreadable with one line otherwise."""
    try:
        fs, path = filesystem(url)
    except UsageError as exc:
        raise Unreadable(str(exc)) from None
    deadline = {"timeout": fetch.timeout} if fs.async_impl else {}
    try:
        fs.invalidate_cache(path)
        info = fs.info(path, **deadline)
        if info.get("type") == "directory":
            raise Unreadable("a folder, not an image")
        size = info.get("size")
        if size is not None and size > fetch.max_bytes:
            raise Unreadable(_too_large(fetch))
        data = fs.cat_file(path, **deadline)
    except Unreadable:
        raise
    except FileNotFoundError:
        raise Unreadable("not found") from None
    except Exception as exc:  # the stores' libraries raise their own types; any of them fails this image only
        if _timed_out(exc):
            raise Unreadable(f"timed out after {fetch.timeout:g} s (--fetch-timeout)") from None
        raise Unreadable(_why(exc, url)) from None
    if len(data) > fetch.max_bytes:
        raise Unreadable(_too_large(fetch))
    return data


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path as it knows it) for `url`; UsageError naming the package to install when the
    protocol's is missing. fsspec caches the instance (per process, thread and options)."""
    protocol = scheme(url) or "file"
    try:
        import fsspec
    except ImportError:  # pragma: no cover - huggingface_hub, which transformers needs, brings it
        raise UsageError(f"{protocol}:// needs fsspec: {_install(protocol, 'fsspec')}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        package = PACKAGES.get(protocol, (None, None))[0]
        if package is None:  # a protocol we do not list: fsspec's own message names its package
            raise UsageError(f"{protocol}:// needs a package that is not installed: {exc}") from None
        raise UsageError(f"{protocol}:// needs {package}: {_install(protocol, package)}") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise UsageError(
                f"{url}: no filesystem is known for {protocol}:// (fsspec knows s3, gs, az, hf, ...): check the URL"
            ) from None
        raise UsageError(f"{url}: {exc}") from None


def stat_of(info: dict[str, Any]) -> tuple[int | None, float | None]:
    """(size, modification time in whole seconds) from a listing's entry, with what the store reports: `size`,
    and `mtime`, `LastModified` (s3), `last_modified` (az), `updated` (gs) or the like. Whole seconds, because
    some stores list milliseconds where their HEAD says seconds (S3): a folder walk and a manifest naming the same
    object must agree. A store that tells no time (hf) gives None: its changes are told by size alone."""
    size = info.get("size")
    return (int(size) if size is not None else None), _mtime(info)


def _mtime(info: dict[str, Any]) -> float | None:
    for key in _MTIME_KEYS:
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            when = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            return float(int(when.timestamp()))
        if isinstance(value, (int, float)):
            return float(int(value))
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            return float(int(when.timestamp()))
    return None


def _walk(fs: Any, top: str, name: Callable[[str], str], unlisted: list[str] | None) -> Iterator[Item]:
    """Images under the folder `top`, recursively, each folder's entries sorted by name (as a local walk: a
    folder among the files), hidden entries and folders kosmos drew or exported into skipped."""

    def walk(folder: str, below: bool) -> Iterator[Item]:
        try:
            entries = fs.ls(folder, detail=True)
        except Exception as exc:  # gone since its parent was listed, or refused
            log.warning("cannot list %s: %s", name(folder), _why(exc, name(folder)))
            if unlisted is not None:
                unlisted.append(name(folder))
            return
        named = sorted(
            ((posixpath.basename(e["name"].rstrip("/")), e) for e in entries if e["name"].rstrip("/") != folder),
            key=lambda pair: pair[0],
        )
        if below and any(base in OUR_FOLDERS for base, _ in named):
            return  # annotated images kosmos drew, or an export's copies (copied up): not photos to ground
        for base, entry in named:
            if not base or base.startswith("."):
                continue
            path = entry["name"].rstrip("/")
            if entry.get("type") == "directory":
                yield from walk(path, True)
            elif is_image_path(base):
                yield Item(name(path), stat=stat_of(entry))

    yield from walk(top.rstrip("/"), False)


def _namer(url: str, path: str) -> Callable[[str], str]:
    """A function from a path as the filesystem lists it to a URL written as `url` was: its scheme and whatever
    the filesystem strips from it (an account in `abfs://container@account...`) kept."""
    given, stripped = url.rstrip("/"), path.rstrip("/")
    # the longest tail of `stripped`, from the start or a "/" on, that `given` ends with (at worst the empty one)
    cuts = [0] + [i + 1 for i, c in enumerate(stripped) if c == "/"] + [len(stripped)]
    cut = next(c for c in cuts if given.endswith(stripped[c:]))
    head, prefix = given[: len(given) - (len(stripped) - cut)], stripped[:cut]

    def name(listed: str) -> str:
        listed = listed.rstrip("/")
        return head + listed[len(prefix) :] if listed.startswith(prefix) else head + listed

    return name


def _hidden(rel: str, pattern: str) -> bool:
    """A glob's match below a hidden name that its pattern did not spell out (Python's glob skips those too)."""
    spelled = {p for p in pattern.split("/") if p.startswith(".")}
    return any(p.startswith(".") and p not in spelled for p in rel.split("/"))


def _install(protocol: str, package: str) -> str:
    extra = PACKAGES.get(protocol, (None, None))[1]
    return f"pip install 'kosmos-ground[{extra}]'" if extra else f"pip install {package}"


def store_error(exc: BaseException, url: str) -> str:
    """One line for an error of a store's library at `url` (credentials, permissions, a missing bucket)."""
    return _why(exc, url)


def _why(exc: BaseException, url: str) -> str:
    """One line for a store's error: a refusal points at where credentials come from."""
    kinds = " ".join(t.__name__ for t in type(exc).__mro__)
    if isinstance(exc, PermissionError) or "Credential" in kinds or "Authentication" in kinds:
        protocol = scheme(url) or ""
        where = CREDENTIALS.get(_SAME_CREDENTIALS.get(protocol, protocol)) or (
            f"credentials for {protocol}:// come from its library's usual places (the environment, its config "
            f"files) or fsspec's FSSPEC_{protocol.upper()}_* variables"
        )
        refused = "permission denied" if isinstance(exc, PermissionError) else "no usable credentials"
        what = _first_line(exc)
        return f"{refused} ({what}): {where}" if what else f"{refused}: {where}"
    return _first_line(exc) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _timed_out(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in type(exc).__name__


def _too_large(fetch: FetchOptions) -> str:
    return f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb): left unread"
