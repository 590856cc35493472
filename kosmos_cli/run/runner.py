"""A run is set up here, and only here: checks -> team -> store -> engine -> the pass over the inputs.

Everything cheap is checked first (options, inputs, the task's boxes or phrases, a drawing folder), then the process
joins the other processes of a launch, then the output is checked (ours, this task's, not an input, not locked,
writable), then the model loads (unless an engine is given), then the pipeline runs over a typed `Run`: a bad
argument or a busy output never costs a model load. This is where another way of running plugs in beside the local
one: with `on="ray"` this process owns the output as a local run does, joins a Ray cluster instead of loading the
model, and the pipeline sends the work there (cluster/ray.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

from ..drawing import Background, Drawer, input_root
from ..errors import UsageError
from ..inputs import locations
from ..inputs.sources import Item, check_inputs
from ..model.engine import Engine
from ..options import GenerationOptions, ModelOptions, RunOptions  # noqa: F401 - runner.RunOptions for callers of run()
from ..output.formats import detect_format
from ..output.store import Store
from ..tasks import Task
from ..tasks.records import Record
from . import ranks
from .pipeline import InProcess, Model, Progress, Run, Summary, execute
from .plan import Plan, decoding_of, plan
from .ranks import Solo

Inputs = str | os.PathLike | Iterable[str] | Iterable[Item]


def start(
    task: Task,
    inputs: Inputs,
    given: dict[str, Any],
    *,
    engine: Engine | None = None,
    progress: Progress | None = None,
    on_write: Callable[[list[Record]], None] | None = None,
    draw: str | None = None,
) -> Summary | Plan:
    """Run `task` over `inputs` with the options a caller `given` (by name: RunOptions', ModelOptions' and
    GenerationOptions' fields), set up in the order above. `engine`: a loaded one, instead of the model options."""
    options = RunOptions.take(given)
    model_given = [n for n in (*ModelOptions.names(), *GenerationOptions.names()) if n in given]
    if engine is not None and model_given:
        raise TypeError(
            f"{', '.join(sorted(model_given))}: model options cannot be given with engine= (the engine was loaded "
            "with its own); pass them to load_engine instead"
        )
    model, generation = ModelOptions.take(given), GenerationOptions.take(given)
    if given:
        raise TypeError(f"unexpected options: {', '.join(sorted(given))}")
    named = listed(inputs)
    _check_inputs(named, options)
    task.check(named)
    if options.dry_run:
        if engine is not None:
            return plan(task, named, options, engine.options.label, engine.decoding)
        return plan(task, named, options, model.label, decoding_of(model, generation))
    fmt = detect_format(options.out, options.format)
    drawer = _drawer(draw, named) if draw is not None else None
    with ranks.team() if options.on == "local" else _driver(engine) as team:
        if not team.solo and "-" in named:
            raise UsageError(
                "paths on stdin (-) can feed one process only: write them to a .txt manifest and name that"
            )
        store = Store.for_run(options.out, fmt, type(task), team)
        if team.main:  # the process that prepares the output: refuse it now, not after the model loads
            store.check(named, overwrite=options.overwrite)
            if not options.wait:
                store.probe()
        answers = _model(options.on, engine, model, generation)  # the model loads here, or the cluster is joined

        def execute_with(model: Model) -> Summary:
            return _execute(Run(task, named, model, options, team, store, progress, on_write), drawer)

        return team.run(answers, task, options, execute_with)


def _execute(run: Run, drawer: Drawer | None) -> Summary:
    """The pipeline over `run`; with a drawer, drawing what it writes on threads of its own."""
    if drawer is None:
        return execute(run)
    on_write = run.on_write
    with Background(drawer) as drawing:  # on threads of its own: the model does not wait for the pictures

        def written(records: list[Record]) -> None:
            drawing.add_records(records)
            if on_write is not None:
                on_write(records)

        summary = execute(dataclasses.replace(run, on_write=written))
        if summary.skipped and run.options.out != "-":  # run again: draw what the last run did not
            drawing.add_missing(run.options.out)
    summary.drawing = drawer.summary
    return summary


def run(
    task: Task,
    inputs: Iterable[str] | Iterable[Item],
    engine: Engine,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
    on_write: Callable[[list[Record]], None] | None = None,
    rank: int = 0,
    world: int = 1,
) -> Summary:
    """Run `task` with a loaded `engine` and no checks before: the pipeline alone, for tools and tests.

    `rank` and `world` shard the inputs by hand, with no coordination; otherwise a launcher's processes share them.
    """
    fmt = detect_format(options.out, options.format)
    with ranks.team() if (rank, world) == (0, 1) else contextlib.nullcontext(Solo(rank)) as team:
        store = Store.for_run(options.out, fmt, type(task), team)

        def execute_with(model: Model) -> Summary:
            return execute(Run(task, inputs, model, options, team, store, progress, on_write, (rank, world)))

        return team.run(InProcess(engine), task, options, execute_with)


def _model(on: str, engine: Engine | None, model: ModelOptions, generation: GenerationOptions) -> Model:
    """Who runs the model: this process (the engine given, or loaded now), or a Ray cluster (joined now)."""
    if on == "ray":
        from .ray import RayData

        return RayData.on_cluster(model, generation)
    return InProcess(engine if engine is not None else Engine(*on_this_rank(model, generation)).load())


def _driver(engine: Engine | None) -> contextlib.AbstractContextManager[Solo]:
    """`on="ray"`: this process alone drives the cluster and owns the output, as a single local process does."""
    if engine is not None:
        raise UsageError(
            "{param} ray loads the model on the cluster's workers: pass the model options (model, device, ...) "
            "instead of engine=",
            param="on",
        )
    if ranks.world_size() > 1:
        raise UsageError(
            "{param} ray drives the cluster from one process: start kosmos once, not under torchrun or accelerate "
            "launch",
            param="on",
        )
    return contextlib.nullcontext(Solo())


def on_this_rank(model: ModelOptions, generation: GenerationOptions) -> tuple[ModelOptions, GenerationOptions]:
    """The model's options with this process's own device: under a launcher, "auto" (or a bare "cuda") becomes the
    rank's device."""
    return dataclasses.replace(model, device=ranks.device_for(model.device)), generation


def listed(inputs: Inputs) -> list:
    """`inputs` as a list: one path (str or os.PathLike) is one input, not a string of characters."""
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(i) if isinstance(i, os.PathLike) else i for i in inputs]


def _check_inputs(named: list, options: RunOptions) -> None:
    if not named or not all(isinstance(i, str) for i in named):
        return
    check_inputs(named, options.fetch)
    if options.image_column is not None and not any(_parquet(i) for i in named):
        raise UsageError(
            "{param} reads each image from a column of a Parquet file: name a .parquet input (folders, images "
            "and other manifests name images by path; --path-column says which column holds them)",
            param="image_column",
        )


def _parquet(arg: str) -> bool:
    """Whether an input names Parquet files (a brace pattern or a glob of them too)."""
    return locations.named_suffix(arg).endswith(".parquet")


def _drawer(folder: str, inputs: list):
    """A Drawer for ground's `draw` folder, keeping the layout below the inputs' common folder; checked (and the
    folder made and marked as ours) now, before the model loads."""
    locations.check_local_output(folder, "draw")
    return Drawer(folder, input_root([i for i in inputs if isinstance(i, str)]), option="--draw")
