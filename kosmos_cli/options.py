"""Every option of kosmos, declared once: its name, type, default, help, flags and check.

An option is a field of a frozen option group (a dataclass below) made with `option(...)`. Both faces are built from
the groups, so a default or a help text cannot drift between them (vLLM's `EngineArgs` feeds `add_cli_args` and
`from_cli_args` the same way):

- the command line: `cli.py` decorates a command with `command_options(Group, ...)`, which adds one Typer option per
  field (flags, help, panel) with the field's default;
- the Python API: `api.py` decorates a function with `keyword_options(Group, ...)`, which gives it one typed keyword
  parameter per field, with the field's default, shown by `help()` and `inspect.signature`.

A call hands the body the values it was given, by name; the body builds the groups with `Group.take(given)`, and a
group's `__post_init__` is the check, the one place it lives. Adding an option is one field plus its use.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import os
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, TypeVar

from .errors import UsageError
from .inputs.listing import Columns
from .inputs.locations import DEFAULT_MAX_BYTES, DEFAULT_RETRIES, DEFAULT_TIMEOUT, FetchOptions
from .model.files import recorded_name
from .model.quantize import check as check_quantize
from .output.formats import check_out

DEFAULT_MODEL = "microsoft/kosmos-2-patch14-224"
DTYPES = ("auto", "float32", "bfloat16", "float16")
DECODERS = ("auto", "fast", "hf")
PLACES = ("local", "ray")  # where a run's model runs (--on)
RAY_EXTRA = "pip install 'kosmos-ground[ray]'"
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

WHERE_IMAGES_LIVE = "Where images live"  # a help panel of its own: the options of remote and packed inputs


@dataclass(frozen=True)
class Flag:
    """How an option shows on the command line. `names` empty: `--` and the field's name in kebab case."""

    help: str
    names: tuple[str, ...] = ()
    panel: str | None = None
    show_default: bool = True
    cli: bool = True  # False: Python only
    api: bool = True  # False: command line only (e.g. `--quiet`)
    api_type: Any = None  # the API's annotation where it is wider than the command line's (boxes as numbers too)

    def flags(self, name: str) -> tuple[str, ...]:
        return self.names or ("--" + name.replace("_", "-"),)


def option(
    default: Any,
    help: str,
    *names: str,
    panel: str | None = None,
    show_default: bool = True,
    cli: bool = True,
    api: bool = True,
    api_type: Any = None,
) -> Any:
    """A field of an option group: its default, help and flags (`names`; default `--field-name`)."""
    return field(default=default, metadata={"flag": Flag(help, names, panel, show_default, cli, api, api_type)})


G = TypeVar("G", bound="Group")


class Group:
    """A frozen dataclass of options; `take` builds one from the values a call was given, by name."""

    @classmethod
    def take(cls: type[G], given: dict[str, Any]) -> G:
        """The group from the entries of `given` that are its fields (removed from `given`); defaults for the rest."""
        return cls(**{f.name: given.pop(f.name) for f in declared(cls) if f.name in given})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in declared(cls))


def declared(group: type) -> list[dataclasses.Field]:
    """The option fields of a group (those made with `option`), in order."""
    return [f for f in dataclasses.fields(group) if "flag" in f.metadata]


def flag_of(f: dataclasses.Field) -> Flag:
    return f.metadata["flag"]


# -- the groups ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelOptions(Group):
    """Which checkpoint, and where and how it runs."""

    model: str | None = option(
        None,
        "Hub id or local folder \\[default: $KOSMOS_MODEL, else microsoft/kosmos-2-patch14-224].",
        "--model",
        "-m",
        show_default=False,
    )
    revision: str | None = option(None, "Hub revision (branch, tag or commit).")
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N.")
    dtype: str = option("auto", "auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
    quantize: str | None = option(
        None,
        "int8: int8 weights for the linear layers of the vision encoder and the text decoder, on the CPU (3.1 times "
        "float32's speed on the full-size architecture, 2 cores, batch 8; approximate; records say so); "
        "int8-or-float32: float32 where int8 cannot be had.",
        show_default=False,
    )

    def __post_init__(self):
        dtype = _DTYPE_ALIASES.get(self.dtype, self.dtype)
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r} ({{param}}): use one of {', '.join(DTYPES)}", param="dtype")
        object.__setattr__(self, "dtype", dtype)
        check_quantize(self.quantize, self.device, dtype)

    @property
    def name(self) -> str:
        return self.model or os.environ.get("KOSMOS_MODEL") or DEFAULT_MODEL

    @property
    def label(self) -> str:
        """What records name as their model: a local folder by its real path (model/files.py `recorded_name`)."""
        name = recorded_name(self.name)
        return f"{name}@{self.revision}" if self.revision else name


@dataclass(frozen=True)
class GenerationOptions(Group):
    """Decoding settings. The defaults are the checkpoint's: greedy, nothing added."""

    max_new_tokens: int = option(128, "Most tokens generated per image.")
    num_beams: int = option(1, "Beam search width (1: greedy).")
    no_repeat_ngram_size: int = option(
        0,
        "Block repeated n-grams (0: off; the paper's demo used 3, which can block a second entity whose phrase ends "
        "like the first).",
    )
    decoder: str = option(
        "auto",
        "fast: our own batched greedy loop (the same tokens as hf, prompts of any length in one batch); hf: "
        "transformers' generate; auto: fast unless --num-beams or --no-repeat-ngram-size ask for hf.",
    )

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise UsageError(
                f"unknown decoder {self.decoder!r} ({{param}}): use one of {', '.join(DECODERS)}", param="decoder"
            )
        if self.max_new_tokens < 1:
            raise UsageError("{param} must be at least 1", param="max_new_tokens")
        if self.num_beams < 1:
            raise UsageError("{param} must be at least 1", param="num_beams")
        if self.no_repeat_ngram_size is None:  # None meant off before 0 did; both still do
            object.__setattr__(self, "no_repeat_ngram_size", 0)
        if self.no_repeat_ngram_size < 0:
            raise UsageError("{param} must be 0 (off) or more", param="no_repeat_ngram_size")
        if self.decoder == "fast" and not self.greedy:
            raise UsageError(
                "{param} fast decodes greedily only: drop --num-beams and --no-repeat-ngram-size, or use --decoder "
                "auto or hf",
                param="decoder",
            )

    @property
    def greedy(self) -> bool:
        """Plain greedy decoding: one beam, no n-gram blocking (what the fast decoder does)."""
        return self.num_beams == 1 and not self.no_repeat_ngram_size

    @property
    def fast(self) -> bool:
        """Whether to decode with our own loop (decoder.py) rather than model.generate."""
        return self.decoder != "hf" and self.greedy

    @property
    def label(self) -> str:
        """What records name as their decoding: "greedy max_new_tokens=128", "beams=3 max_new_tokens=64
        no_repeat_ngram_size=3". A record made with another one is redone."""
        search = "greedy" if self.num_beams == 1 else f"beams={self.num_beams}"
        blocked = f" no_repeat_ngram_size={self.no_repeat_ngram_size}" if self.no_repeat_ngram_size else ""
        return f"{search} max_new_tokens={self.max_new_tokens}{blocked}"

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": False,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kwargs


@dataclass(frozen=True)
class RunOptions(Group):
    """How a run reads, batches and writes; the same for every command."""

    out: str = option(
        "-",
        "Output file (.jsonl or .parquet); a folder (an existing one, or a name ending in /, here or s3://, gs://, "
        "az://) for a Parquet dataset of parts; or - for JSONL on stdout.",
        "--out",
        "-o",
    )
    format: str | None = option(None, "jsonl or parquet (default: from --out's extension).", show_default=False)
    batch_size: int | None = option(
        None,
        "Images per forward pass (default: 8 on the CPU; on CUDA 64 to 256, chosen from free memory).",
        "--batch-size",
        "-b",
        show_default=False,
    )
    overwrite: bool = option(False, "Start afresh instead of resuming.")
    retry_failed: bool = option(False, "Also redo images recorded as failed.")
    prune: bool = option(False, "Drop records of images no longer in the inputs.")
    wait: bool = option(False, "Wait for another run on the same output instead of exiting.")
    dry_run: bool = option(
        False,
        "Say what a run would do (new, recorded, changed, failed before, to prune) and stop: no model, nothing "
        "written.",
    )
    workers: int | None = option(
        None, "Background image loaders \\[default: one per CPU, up to 16].", show_default=False
    )
    null: bool = option(
        False,
        "Paths on stdin (-) are separated by NUL bytes, as find -print0 writes them, not by lines.",
        "--null",
        "-0",
    )
    path_column: str = option(
        "path",
        "The manifest column with each image's path or URL (img2dataset link lists: url).",
        panel=WHERE_IMAGES_LIVE,
    )
    image_column: str | None = option(
        None,
        "Read each image from this Parquet column of bytes (img2dataset: jpg) instead of a path.",
        panel=WHERE_IMAGES_LIVE,
        show_default=False,
    )
    key_column: str | None = option(
        None,
        "With --image-column: the column that names each row \\[default: key].",
        panel=WHERE_IMAGES_LIVE,
        show_default=False,
    )
    fetch_timeout: float = option(
        DEFAULT_TIMEOUT,
        "Seconds one try at a remote image may take, connecting and reading all of it, before it fails.",
        panel=WHERE_IMAGES_LIVE,
    )
    fetch_retries: int = option(
        DEFAULT_RETRIES,
        "Tries again after a 429, 5xx, timeout or dropped connection, with backoff.",
        panel=WHERE_IMAGES_LIVE,
    )
    max_image_mb: float = option(
        DEFAULT_MAX_BYTES / 2**20,
        "An image larger than this fails unread: a remote one, a Parquet row's bytes, a shard's member.",
        panel=WHERE_IMAGES_LIVE,
    )
    on: str = option(
        "local",
        "local: this machine (several GPUs: torchrun or accelerate launch); ray: a Ray cluster ($RAY_ADDRESS, ray "
        "job submit, or one started here), one model actor per GPU.",
    )
    draft: bool = True  # JPEGs decoded at a reduced scale where the model's input allows (not an option: tests)

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("{param} must be at least 1", param="batch_size")
        if self.workers is not None and self.workers < 1:
            raise UsageError("{param} must be at least 1", param="workers")
        if self.key_column is not None and self.image_column is None:
            raise UsageError("{param} is for rows that hold image bytes: give --image-column too", param="key_column")
        for name in ("path_column", "image_column", "key_column"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise UsageError("{param} cannot be empty: name a column", param=name)
        self.fetch  # noqa: B018 - checks the fetch options now, before anything runs
        check_out(self.out)
        if self.on not in PLACES:
            raise UsageError(f"unknown {{param}} {self.on!r}: use one of {', '.join(PLACES)}", param="on")
        if self.on == "ray" and importlib.util.find_spec("ray") is None:  # said before anything loads
            raise UsageError(f"{{param}} ray needs Ray, which is not installed: {RAY_EXTRA}", param="on")

    @property
    def columns(self) -> Columns:
        """Which manifest columns name the image (--path-column, --image-column, --key-column)."""
        return Columns(self.path_column, self.image_column, self.key_column)

    @property
    def fetch(self) -> FetchOptions:
        """How remote images are read (--fetch-timeout, --fetch-retries, --max-image-mb)."""
        return FetchOptions(self.fetch_timeout, self.fetch_retries, int(self.max_image_mb * 2**20))


@dataclass(frozen=True)
class GroundOptions(Group):
    """What ground asks of each image, and where its pictures go."""

    prompt: str = option(
        "brief",
        "brief ('<grounding> An image of'), detailed ('<grounding> Describe this image in detail:'), or any text.",
    )
    draw: str | None = option(
        None, "Also draw each image's boxes into this folder, as kosmos draw does.", show_default=False
    )


@dataclass(frozen=True)
class ReferOptions(Group):
    """The regions refer describes."""

    boxes: list[str] | None = option(
        None,
        "A region x1,y1,x2,y2 in pixels of the image as displayed (EXIF applied); repeat for more. Without it: a "
        "manifest's x1, y1, x2, y2 columns.",
        "--box",
        show_default=False,
        api_type=Optional[Iterable],
    )
    normalized: bool = option(False, "Boxes are 0-1 fractions of width and height.")


@dataclass(frozen=True)
class FindOptions(Group):
    """The phrases find looks for."""

    phrases: list[str] | None = option(
        None,
        "A phrase to find in every image; repeat for more. Never mistaken for an input.",
        "--phrase",
        "-p",
        show_default=False,
        api_type=Optional[Iterable[str]],
    )


@dataclass(frozen=True)
class Strict(Group):
    """How the command line exits when some images failed."""

    strict: bool = option(False, "Exit 1 if any image failed.", api=False)


@dataclass(frozen=True)
class Quiet(Group):
    """What the command line says on stderr."""

    quiet: bool = option(False, "No progress, warnings or summary on stderr.", "--quiet", "-q", api=False)


@dataclass(frozen=True)
class AsJson(Group):
    """What a command that reports prints on stdout: one JSON object instead of what a person reads."""

    json: bool = option(
        False, "Print the report (eval's, or --dry-run's plan) as one JSON object on stdout.", api=False
    )


@dataclass(frozen=True)
class ScoreFilter(Group):
    """Which boxes a reader of results keeps."""

    min_score: float | None = option(
        None,
        "Only boxes whose score (0-1) is at least this; boxes without a score are left out.",
        show_default=False,
    )


@dataclass(frozen=True)
class DrawOptions(Group):
    """How kosmos draw writes its pictures."""

    html: bool = option(False, "Also write index.html, a gallery that opens from the folder in a browser.")


@dataclass(frozen=True)
class ClassOptions(Group):
    """Which class a phrase's boxes are (export and eval match phrases the same way)."""

    classes: str | None = option(
        None,
        'Classes, in order, comma-separated ("dog,cat,traffic light"): only boxes whose phrase names one ("two dogs" '
        "is dog) \\[default: export: one class per distinct phrase; eval: the truth's classes].",
        show_default=False,
        api_type=Optional[typing.Union[str, Iterable[str]]],
    )
    classes_file: str | None = option(None, "Classes, one a line, as --classes.", show_default=False)


@dataclass(frozen=True)
class Duplicates(Group):
    """Which of overlapping boxes of one class stay (export and eval drop the same ones)."""

    nms: float | None = option(
        None,
        "Of boxes of one class in one image overlapping by more than this IoU, keep the best-scored.",
        show_default=False,
    )


@dataclass(frozen=True)
class ExportOptions(Group):
    """How an export names images, and what only some formats take."""

    root: str | None = option(None, "Write image paths relative to this folder.", show_default=False)
    image_root: str | None = option(
        None,
        "labelstudio: a URL prefix or local-files path put before each image's path "
        "(e.g. /data/local-files/?d=photos/).",
        show_default=False,
    )
    copy_images: bool = option(False, "yolo: copy the images into OUT/images instead of linking them.")


@dataclass(frozen=True)
class ViewOptions(Group):
    """Where kosmos view listens, and what it keeps in memory."""

    port: int | None = option(
        None,
        "Port to listen on; 0: any free one \\[default: 8000, or the next free one up to 8019].",
        show_default=False,
    )
    host: str = option(
        "127.0.0.1",
        "Address to listen on; any other than 127.0.0.1 lets other machines see the results and their images.",
    )
    open_browser: bool = option(False, "Open the page in the default browser.", "--open")
    cache_mb: int = option(64, "Memory for the images made for the page, in MB.")


@dataclass(frozen=True)
class EvalOptions(Group):
    """What kosmos eval pairs, and how it shows what it measured."""

    root: str | None = option(
        None,
        "Pair images by their paths relative to this folder (when the truth's names and the recorded paths differ "
        "by a prefix) \\[default: as recorded; a truth name also pairs with the one recorded path it ends].",
        show_default=False,
    )
    plot: str | None = option(
        None,
        "Also draw precision against recall per class, the chosen --min-score marked, into this .png file.",
        show_default=False,
    )


RUN_GROUPS: tuple[type[Group], ...] = (RunOptions, ModelOptions, GenerationOptions)  # every model command has these
REPORTING: tuple[type[Group], ...] = (Strict, Quiet)  # what a command that ends with a summary says, and its exit
OUT = ("out",)  # the one option the Python API also takes by position: ground(inputs, "results.parquet")


# -- the two faces -----------------------------------------------------------------------------------------------------
def _hints(group: type) -> dict[str, Any]:
    return typing.get_type_hints(group)


def _fields(groups: Iterable[type[Group]], face: str) -> list[tuple[dataclasses.Field, Any, type[Group]]]:
    """(field, its type, its group) for every option of `groups` shown on `face` ("cli" or "api"); a name may be
    declared in one group only."""
    seen: dict[str, type] = {}
    out = []
    for group in groups:
        hints = _hints(group)
        for f in declared(group):
            if f.name in seen:
                raise TypeError(f"option {f.name} is declared in both {seen[f.name].__name__} and {group.__name__}")
            seen[f.name] = group
            if getattr(flag_of(f), face):
                out.append((f, hints[f.name], group))
    return out


def _with_signature(body: Callable, parameters: list[inspect.Parameter], annotations: dict[str, Any]) -> Callable:
    signature = inspect.Signature(parameters, return_annotation=inspect.signature(body).return_annotation)

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # an unknown keyword is a TypeError, as Python's own
        return body(**bound.arguments)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]  # what inspect, help() and Typer read
    wrapper.__annotations__ = annotations
    del wrapper.__wrapped__  # inspect.signature shows the built signature, not the body's **given
    return wrapper


def _own(body: Callable) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The body's own parameters (without its **given) and their resolved annotations."""
    hints = typing.get_type_hints(body, include_extras=True)
    own = [p for p in inspect.signature(body).parameters.values() if p.kind is not p.VAR_KEYWORD]
    return [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own], {
        p.name: hints[p.name] for p in own if p.name in hints
    }


def keyword_options(*groups: type[Group], positional: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """The Python API's face: the body's parameters, then each option of `groups` as a typed keyword parameter with
    its declared default (those named in `positional` also by position, right after the body's positional ones).
    The body gets only the options a caller gave, in its **given, by name."""

    def decorate(body: Callable) -> Callable:
        own, annotations = _own(body)
        by_position = [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD]
        keyword = [p for p in own if p.kind is not p.POSITIONAL_OR_KEYWORD]
        leading, trailing = [], []
        for f, hint, _ in _fields(groups, "api"):
            hint = flag_of(f).api_type or hint
            annotations[f.name] = hint
            if f.name in positional:
                leading.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default))
            else:
                trailing.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default))
        leading = [p.replace(annotation=annotations[p.name]) for p in leading]
        trailing = [p.replace(annotation=annotations[p.name]) for p in trailing]
        return _with_signature(body, [*by_position, *leading, *keyword, *trailing], annotations)

    return decorate


def command_options(*groups: type[Group]) -> Callable[[Callable], Callable]:
    """The command line's face: the body's own parameters (Typer arguments and options), then each option of `groups`
    as a Typer option with its flags, help, panel and declared default. The body gets them all in its **given."""
    import typer  # the command line's alone: the library never imports it

    def decorate(body: Callable) -> Callable:
        own, annotations = _own(body)
        added = []
        for f, hint, _ in _fields(groups, "cli"):
            flag = flag_of(f)
            metavar = "" if hint is bool else None  # a plain flag takes no value: no "<bool>" beside it
            given = typer.Option(
                *flag.flags(f.name),
                help=flag.help,
                rich_help_panel=flag.panel,
                show_default=flag.show_default,
                metavar=metavar,
            )
            typed = Annotated.__class_getitem__((hint, given))  # type: ignore[attr-defined]  # Annotated[hint, given]
            annotations[f.name] = typed
            added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=typed))
        return _with_signature(body, [*own, *added], annotations)

    return decorate


def flag_for(param: str) -> str:
    """The command line's flag for a library parameter: "batch_size" -> "--batch-size", "boxes" -> "--box"."""
    for group in _all_groups():
        for f in declared(group):
            if f.name == param:
                return flag_of(f).flags(f.name)[0]
    return "--" + param.replace("_", "-")


def _all_groups() -> list[type[Group]]:
    """Every option group, wherever declared (a task's own options may live beside the task)."""
    found, todo = [], list(Group.__subclasses__())
    while todo:
        group = todo.pop(0)
        found.append(group)
        todo.extend(group.__subclasses__())
    return found
