"""Options are declared once (kosmos_cli/options/declare.py; the groups in options/ and options/readers.py): the command
line and the Python API are built from the same declarations, so their names, defaults and checks cannot drift. No
model needed."""

import dataclasses
import inspect

import pytest
import typer

import kosmos_cli
from kosmos_cli import api, options
from kosmos_cli.cli import app
from kosmos_cli.errors import UsageError
from kosmos_cli.options import GenerationOptions, ModelOptions, RunOptions, declare

COMMANDS = {
    "ground": api.ground,
    "refer": api.refer,
    "find": api.find,
    "draw": api.draw,
    "export": api.export,
    "eval": api.eval_results,
    "view": api.view,
}
CLI_ONLY = {"quiet", "strict", "json"}  # what the CLI prints and how it exits: the API returns an object
CLI_ARGUMENTS = {"find": {"input_", "listed"}}  # find's one INPUT is inputs=[INPUT]; PHRASES... join --phrase


def _cli_params(name):
    command = typer.main.get_command(app).commands[name]
    return {p.name: p for p in command.params if p.name != "help"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_cli_option_has_the_api_parameter_of_the_same_name_and_default(name):
    api_params = inspect.signature(COMMANDS[name]).parameters
    checked = 0
    for param_name, param in _cli_params(name).items():
        if param_name in CLI_ONLY or param_name in CLI_ARGUMENTS.get(name, ()):
            continue
        assert param_name in api_params, f"kosmos {name} {param.opts}: no API parameter {param_name}"
        api_default = api_params[param_name].default
        if param.required:
            assert api_default is inspect.Parameter.empty, f"{name}.{param_name}: required on one side only"
        else:
            cli_default = param.default if not param.multiple else (param.default or None)
            assert cli_default == api_default, f"{name}.{param_name}: CLI default {cli_default!r} != {api_default!r}"
        checked += 1
    assert checked >= 3 or name == "view"


@pytest.mark.parametrize("name", ["ground", "refer", "find"])
def test_every_declared_option_reaches_both_faces(name):
    cli, sig = _cli_params(name), inspect.signature(COMMANDS[name]).parameters
    for group in options.RUN_GROUPS:
        for f in declare.declared(group):
            assert f.name in cli and f.name in sig
            assert sig[f.name].default == f.default  # the API's default is the declaration's


def test_the_defaults_that_had_drifted_are_one_value():
    sig = inspect.signature(api.ground).parameters
    assert sig["prompt"].default == "brief" == _cli_params("ground")["prompt"].default
    assert sig["no_repeat_ngram_size"].default == 0 == GenerationOptions().no_repeat_ngram_size
    assert inspect.signature(api.load_engine).parameters["no_repeat_ngram_size"].default == 0


def test_api_parameters_are_typed_and_out_is_positional():
    sig = inspect.signature(kosmos_cli.ground)
    assert list(sig.parameters)[:2] == ["inputs", "out"]
    assert sig.parameters["batch_size"].annotation == int | None
    assert sig.parameters["fetch_timeout"].annotation is float
    assert sig.parameters["out"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert sig.parameters["model"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(kosmos_cli.load_engine).parameters)[0] == "model"


def test_an_unknown_keyword_is_a_type_error_before_anything_runs(tmp_path):
    with pytest.raises(TypeError, match="batchsize"):
        kosmos_cli.ground(str(tmp_path), batchsize=3)
    with pytest.raises(TypeError):
        kosmos_cli.find(str(tmp_path), quiet=True)  # a command line option only


def test_a_name_is_declared_in_one_group_only():
    @dataclasses.dataclass(frozen=True)
    class Again(declare.Group):
        batch_size: int = declare.option(1, "again")

    with pytest.raises(TypeError, match="batch_size is declared in both"):
        declare.keyword_options(RunOptions, Again)(lambda **given: None)


def test_take_builds_the_group_from_its_own_names_only():
    given = {"batch_size": 4, "model": "m", "prompt": "x"}
    run = RunOptions.take(given)
    assert run.batch_size == 4 and given == {"model": "m", "prompt": "x"}
    assert ModelOptions.take(given).model == "m" and given == {"prompt": "x"}


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda: RunOptions(batch_size=0), "batch_size"),
        (lambda: RunOptions(workers=0), "workers"),
        (lambda: RunOptions(key_column="k"), "key_column"),
        (lambda: RunOptions(path_column=" "), "path_column"),
        (lambda: RunOptions(fetch_timeout=0), "fetch_timeout"),
        (lambda: RunOptions(max_image_mb=0), "max_image_mb"),
        (lambda: GenerationOptions(max_new_tokens=0), "max_new_tokens"),
        (lambda: GenerationOptions(decoder="quick"), "decoder"),
        (lambda: ModelOptions(dtype="int3"), "dtype"),
    ],
)
def test_each_check_lives_in_its_declaration(make, param):
    with pytest.raises(UsageError) as caught:
        make()
    assert caught.value.param == param


def test_errors_name_the_flag_the_declaration_gives():
    assert declare.flag_for("boxes") == "--box"
    assert declare.flag_for("phrases") == "--phrase"
    assert declare.flag_for("batch_size") == "--batch-size"
    assert declare.flag_for("something_else") == "--something-else"
