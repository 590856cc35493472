"""Loading a model fails in one line that says what to do: a folder that is not there, a damaged weights file,
a hub that cannot be reached; and a model in the local cache loads without asking the network."""

import os
import shutil
import subprocess
import sys

import pytest

from kosmos_cli.model.files import looks_like_path
from tests.helpers import ROOT, kosmos, make_images, one_error_line


@pytest.fixture
def image(tmp_path):
    return make_images(str(tmp_path / "photos"), sizes=((64, 48),))[0]


@pytest.mark.parametrize(
    "name, path",
    [
        ("./typo-folder", True),
        ("../models/kosmos", True),
        ("/models/kosmos", True),
        ("~/kosmos", True),
        (".", True),
        ("models/kosmos/v2", True),
        ("microsoft/kosmos-2-patch14-224", False),
        ("kosmos-2", False),
        ("org/name", False),
    ],
)
def test_a_name_that_can_only_be_a_folder(name, path):
    assert looks_like_path(name) is path


@pytest.mark.parametrize("name", ["./typo-folder", "../no-such-dir/model", "/no/such/kosmos-model"])
def test_a_folder_that_does_not_exist_is_said_so(image, name):
    result = kosmos("ground", image, "--model", name)
    one_error_line(result, 1, f"model folder {name} does not exist")
    assert "Repo id" not in result.stderr


def test_a_file_given_as_the_model_folder(image):
    one_error_line(kosmos("ground", image, "--model", image), 1, "is a file, not a folder")


@pytest.mark.parametrize("damage", ["half", "empty", "garbage"])
def test_a_damaged_weights_file_is_one_line(tiny_model, tmp_path, image, damage):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    if damage == "half":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        with open(weights, "r+b") as f:
            f.write(b"\xff" * 64)
    result = kosmos("ground", image, "--model", str(folder))
    one_error_line(result, 1, "is damaged or incomplete")
    assert "re-save" in result.stderr


def _run(args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    full.update(env, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there: connection refused
    return subprocess.run(
        [sys.executable, "-m", "kosmos_cli", *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=120
    )


def test_an_unreachable_hub_is_one_line_before_any_retry(tmp_path, image):
    proc = _run(["ground", image, "--model", "fake-org/fake-model", "-q"], HF_HOME=str(tmp_path / "hf"))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "kosmos: error: cannot download model fake-org/fake-model: the Hugging Face hub cannot be reached"
    )
    assert "HF_HUB_OFFLINE" in lines[0] and "--model FOLDER" in lines[0]
    assert proc.stdout == ""


def test_a_model_in_the_local_cache_loads_without_the_network(tiny_model, tmp_path, image):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--fake-org--cached-kosmos"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    proc = _run(
        ["ground", image, "--model", "fake-org/cached-kosmos", "--max-new-tokens", "2", "-q"],
        HF_HOME=str(tmp_path / "hf"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no retry warnings: the network was never asked
    assert '"model": "fake-org/cached-kosmos"' in proc.stdout


def test_an_older_transformers_found_at_load_is_one_line(tiny_model, image, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    result = kosmos("ground", image, model=tiny_model)
    one_error_line(result, 1, "transformers 5.17.0 is installed, but kosmos needs transformers>=5.24")
