"""The options of a run, declared once: which model and how it decodes, how a run reads, batches and writes, each
task's own, and what the command line says of a run and how it exits.

Each is a field of a frozen option group made with `declare.option` (name, type, default, help, flags); the group's
`__post_init__` is its check. `api.py` and `cli/` build their parameters and options from these groups
(`options/declare.py` says how); the readers of results (draw, export, eval, view) declare theirs in
`options/readers.py`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import UsageError
from ..inputs.listing import Columns
from ..inputs.locations import DEFAULT_MAX_BYTES, DEFAULT_RETRIES, DEFAULT_TIMEOUT, FetchOptions
from ..model.files import recorded_name
from ..model.quantize import check as check_quantize
from ..output.formats import check_out
from .declare import Group, option

DEFAULT_MODEL = "microsoft/kosmos-2-patch14-224"
DTYPES = ("auto", "float32", "bfloat16", "float16")
DECODERS = ("auto", "fast", "hf")
PLACES = ("local", "ray")  # where a run's model runs (--on)
RAY_EXTRA = "pip install 'kosmos-ground[ray]'"
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

WHERE_IMAGES_LIVE = "Where images live"  # a help panel of its own: the options of remote and packed inputs


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
        _at_least_one(self, "max_new_tokens", "num_beams")
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
        _at_least_one(self, "batch_size", "workers")
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


def _at_least_one(group: Group, *names: str) -> None:
    for name in names:
        if (value := getattr(group, name)) is not None and value < 1:
            raise UsageError("{param} must be at least 1", param=name)


RUN_GROUPS: tuple[type[Group], ...] = (RunOptions, ModelOptions, GenerationOptions)  # every model command has these
REPORTING: tuple[type[Group], ...] = (Strict, Quiet)  # what a command that ends with a summary says, and its exit
OUT = ("out",)  # the one option the Python API also takes by position: ground(inputs, "results.parquet")
