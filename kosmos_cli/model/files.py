"""Where a checkpoint comes from (a folder, the local Hugging Face cache, the hub), and what to say when it cannot
be loaded from there: a folder that does not exist, a hub that cannot be reached, a damaged weights file.

engine.py loads; this module only looks at names, files and the network, and writes the messages.
huggingface_hub is imported here lazily, and only while a model loads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import warnings
from urllib.parse import quote

from ..errors import ModelError

_TRUE = ("1", "true", "yes", "on")


def looks_like_path(name: str) -> bool:
    """A name that can only mean a folder: ./x, ../x, /x, ~/x, C:\\x, or more than one "/" (a hub id has one)."""
    if name in (".", "..", "~") or name.startswith(("./", "../", "/", "~", ".\\", "..\\")):
        return True
    if os.sep != "/" and (os.sep in name or name[1:2] == ":"):
        return True
    return name.count("/") > 1


def local_model_path(name: str) -> str:
    """`name` as given, or the folder it names with ~ expanded; a ModelError when a path-looking name names none."""
    if not looks_like_path(name):
        return name
    path = os.path.expanduser(name)
    if not os.path.exists(path):
        raise ModelError(
            f"model folder {name} does not exist: check the path, or pass a hub id such as "
            "microsoft/kosmos-2-patch14-224"
        )
    if not os.path.isdir(path):
        raise ModelError(
            f"--model {name} is a file, not a folder: pass the folder that holds config.json and "
            "the weights (written by save_pretrained)"
        )
    return path


def recorded_name(name: str) -> str:
    """What records name as the model `name`: a local folder by its real absolute path, so the same folder named
    relative, absolute or through a link is one model (and a link moved to another folder is another); a hub id as
    given."""
    path = os.path.expanduser(name)
    return os.path.realpath(path) if os.path.isdir(path) else name


@functools.lru_cache(maxsize=64)
def same_model(recorded: str, current: str) -> bool:
    """Whether a record's `model` names the model `current` names: the same string, or the same local folder
    however each is spelled (records written before `recorded_name` hold the name as given, often relative: it is
    read from the current folder, as it was given)."""
    if recorded == current:
        return True
    mine, theirs = os.path.expanduser(current), os.path.expanduser(recorded)
    try:
        return os.path.isdir(mine) and os.path.isdir(theirs) and os.path.samefile(mine, theirs)
    except (OSError, ValueError):
        return False


def hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def quiet_hub():
    """huggingface_hub's warnings (five "Retrying in 8s" on a network that is down) held back while a model loads."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="huggingface_hub")
            yield
    finally:
        logger.setLevel(level)


def hub_unreachable(name: str, revision: str | None) -> str | None:
    """Why the hub gives no answer at all about `name`, in a few words; None when it answers (even "not found").

    One request, no retries: asked before downloading a model that is not in the local cache, so that a machine
    without network hears it at once instead of after huggingface_hub's retries.
    """
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session, validate_repo_id
    except ImportError:
        return None
    try:
        validate_repo_id(name)
    except ValueError:
        return None  # not a hub id at all: loading says so
    url = f"{constants.ENDPOINT}/{name}/resolve/{quote(revision or 'main', safe='')}/config.json"
    try:
        get_session().head(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except TypeError:
        return None  # an HTTP client we do not know: let the download itself tell
    except Exception as exc:  # noqa: BLE001 - no answer, whatever the transport calls it
        text = str(exc).strip().splitlines()
        return f"{constants.ENDPOINT}: {text[0] if text else type(exc).__name__}"
    return None


def unreachable_hint(name: str, problem: str) -> str:
    return (
        f"cannot download model {name}: the Hugging Face hub cannot be reached ({problem}) and the model is not "
        "in the local cache: connect to the network once to download it, or pass --model FOLDER with a saved "
        "copy (HF_HUB_OFFLINE=1 keeps kosmos off the network)"
    )


def is_damaged_weights(exc: BaseException) -> bool:
    """An exception of safetensors or torch reading a weights file: the file is truncated or corrupt."""
    return type(exc).__name__ == "SafetensorError" or isinstance(
        exc, (RuntimeError, EOFError, pickle.UnpicklingError, MemoryError)
    )


def damaged_hint(name: str, exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    if "size mismatch" in first:
        what = f"the weights of {name} do not fit its config.json ({first})"
    else:
        what = f"the weights file of {name} is damaged or incomplete ({first})"
    if os.path.isdir(name):
        return f"cannot load model: {what}: copy or download it again, or re-save the model with save_pretrained"
    return (
        f"cannot load model: {what}: delete the model from the Hugging Face cache (hf cache delete, or its "
        "models--* folder under HF_HOME/hub) and run again to download it afresh"
    )
