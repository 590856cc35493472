"""The lowest torch and transformers the code runs on: declared once (device.NEEDS), the same lower bounds as
pyproject.toml's (.ci/lowest runs the tests on those versions), and an older one installed is one line naming the
version needed, before any model loads."""

import re

import pytest

from kosmos_cli.errors import ModelError
from kosmos_cli.model import device
from tests.helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later


def lower_bounds():
    with open(f"{ROOT}/pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["dependencies"]
    return {re.match(r"[a-z]+", d).group(0): re.search(r">=([0-9.]+)", d).group(1) for d in declared}


def test_the_declared_lower_bounds_are_the_ones_the_engine_checks():
    bounds = lower_bounds()
    assert {name: bounds[name] for name in device.NEEDS} == device.NEEDS


@pytest.mark.parametrize(
    ("installed", "older"),
    [("5.17.0", True), ("5.23.9", True), ("5.24.0", False), ("5.24.0.dev0", False), ("6.1.0", False), ("?", False)],
)
def test_an_older_transformers_is_one_line_naming_the_version_needed(monkeypatch, installed, older):
    import transformers

    monkeypatch.setattr(transformers, "__version__", installed)
    if not older:
        device.check_versions()
        return
    with pytest.raises(ModelError) as caught:
        device.check_versions()
    message = str(caught.value)
    assert f"transformers {installed} is installed" in message and "transformers>=5.24" in message
    assert "\n" not in message


@pytest.mark.parametrize(("installed", "older"), [("2.5.1+cu124", True), ("2.1.0", True), ("2.6.0+cpu", False)])
def test_an_older_torch_is_one_line_naming_the_version_needed(monkeypatch, installed, older):
    import torch

    monkeypatch.setattr(torch, "__version__", installed)
    if older:
        with pytest.raises(ModelError, match=r"torch .* is installed, but kosmos needs torch>=2\.6"):
            device.check_versions()
    else:
        device.check_versions()


def test_versions_compare_as_numbers():
    assert device._release("5.9.0") < device._release("5.24") < device._release("5.24.0") < device._release("5.100")
    assert device._release("2.6.0+cu124") == (2, 6, 0)


def test_ci_tests_the_declared_lower_bounds():
    with open(f"{ROOT}/.ci/lowest", encoding="utf-8") as f:
        pins = re.search(r"^LOWEST=\((.*)\)$", f.read(), re.M).group(1).split()
    tested = {name: version for name, version in (pin.split("==") for pin in pins)}
    bounds = lower_bounds()
    for name, version in tested.items():
        bound = bounds[name].split(".")
        assert version.split(".")[: len(bound)] == bound, f"{name}: .ci/lowest tests {version}, declared >={bound}"
    assert set(tested) == {"torch", "transformers", "typer", "accelerate", "pyarrow"}
