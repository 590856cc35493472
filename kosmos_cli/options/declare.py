"""How an option is declared once, and the two faces built from the declaration.

An option is a field of a frozen option group (a dataclass: `options/__init__.py` for a run's,
`options/readers.py` for the readers' of results) made with `option(...)`: its name, type, default, help and flags.
Both faces are built from the groups, so a default or a help text cannot drift between them (vLLM's `EngineArgs`
feeds `add_cli_args` and `from_cli_args` the same way):

- the command line: `cli/` decorates a command with `command_options(Group, ...)`, which adds one Typer option per
  field (flags, help, panel) with the field's default;
- the Python API: `api.py` decorates a function with `keyword_options(Group, ...)`, which gives it one typed keyword
  parameter per field, with the field's default, shown by `help()` and `inspect.signature`.

A call hands the body the values it was given, by name; the body builds the groups with `Group.take(given)`, and a
group's `__post_init__` is the check, the one place it lives. Adding an option is one field plus its use.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar


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


# -- the two faces -----------------------------------------------------------------------------------------------------
def _fields(groups: Iterable[type[Group]], face: str) -> list[tuple[dataclasses.Field, Any]]:
    """(field, its type) for every option of `groups` shown on `face` ("cli" or "api"); a name may be declared in
    one group only."""
    seen: dict[str, type] = {}
    out = []
    for group in groups:
        hints = typing.get_type_hints(group)
        for f in declared(group):
            if f.name in seen:
                raise TypeError(f"option {f.name} is declared in both {seen[f.name].__name__} and {group.__name__}")
            seen[f.name] = group
            if getattr(flag_of(f), face):
                out.append((f, hints[f.name]))
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
        leading: list[inspect.Parameter] = []
        trailing: list[inspect.Parameter] = []
        for f, hint in _fields(groups, "api"):
            annotations[f.name] = hint = flag_of(f).api_type or hint
            first = f.name in positional
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if first else inspect.Parameter.KEYWORD_ONLY
            (leading if first else trailing).append(inspect.Parameter(f.name, kind, default=f.default, annotation=hint))
        return _with_signature(body, [*by_position, *leading, *keyword, *trailing], annotations)

    return decorate


def command_options(*groups: type[Group]) -> Callable[[Callable], Callable]:
    """The command line's face: the body's own parameters (Typer arguments and options), then each option of `groups`
    as a Typer option with its flags, help, panel and declared default. The body gets them all in its **given."""
    import typer  # the command line's alone: the library never imports it

    def decorate(body: Callable) -> Callable:
        own, annotations = _own(body)
        added = []
        for f, hint in _fields(groups, "cli"):
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
    for group in _all_groups(Group):
        for f in declared(group):
            if f.name == param:
                return flag_of(f).flags(f.name)[0]
    return "--" + param.replace("_", "-")


def _all_groups(group: type[Group]) -> Iterator[type[Group]]:
    """Every option group below `group`, wherever declared (a task's own options may live beside the task)."""
    for sub in group.__subclasses__():
        yield sub
        yield from _all_groups(sub)
