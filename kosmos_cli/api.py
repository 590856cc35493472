"""The library API: everything a command does, callable from Python.

    from kosmos_cli import ground
    summary = ground(["photos/"], out="results.parquet", model="microsoft/kosmos-2-patch14-224")
"""

from __future__ import annotations

from collections.abc import Iterable

from .engine import Engine, GenerationOptions, ModelOptions
from .jobs import GroundJob
from .pipeline import Progress, RunOptions, Summary, run
from .sources import Item, check_inputs


def load_engine(
    model: str | None = None,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int = 128,
    num_beams: int = 1,
    no_repeat_ngram_size: int | None = None,
) -> Engine:
    """Load a Kosmos-2 checkpoint once; pass the engine to several calls with `engine=`."""
    return Engine(
        ModelOptions(model, revision, device, dtype),
        GenerationOptions(max_new_tokens, num_beams, no_repeat_ngram_size),
    ).load()


def ground(
    inputs: Iterable[str] | Iterable[Item],
    out: str = "-",
    *,
    prompt: str | None = None,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    on_write=None,
    **model_options,
) -> Summary:
    """Caption and ground every image named by `inputs` (folders, files, globs, manifests); write to `out`."""
    if not isinstance(inputs, (list, tuple)):
        inputs = list(inputs)
    if inputs and all(isinstance(i, str) for i in inputs):
        check_inputs(inputs)
    options = RunOptions(out=out, format=format, batch_size=batch_size, workers=workers, overwrite=overwrite,
                         retry_failed=retry_failed, prune=prune, wait=wait)
    job = GroundJob(prompt)
    engine = engine or load_engine(model, **model_options)
    return run(job, inputs, engine, options, progress=progress, on_write=on_write)
