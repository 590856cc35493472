"""--dry-run: what a run would do, said without the model and with nothing written; then the run does just that."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from kosmos_cli import find, ground
from kosmos_cli.output.reader import read_records
from tests.helpers import ROOT, kosmos, make_images, one_error_line


def _tree(folder):
    """Every file under `folder` with its checksum: what a dry run must leave as it was."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[path] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture
def recorded(tmp_path, tiny_engine):
    """A folder run once (one image in it unreadable), then changed: 2 images added, 1 touched, 1 deleted."""
    photos = tmp_path / "photos"
    paths = make_images(str(photos), sizes=[(224, 224), (320, 200), (200, 320), (288, 224), (240, 240)])
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = str(tmp_path / "results.jsonl")
    first = ground(str(photos), out, engine=tiny_engine)
    assert (first.done, first.failed) == (5, 1)
    make_images(str(photos / "new"), sizes=[(64, 64), (96, 64)])
    later = time.time() + 5
    os.utime(paths[0], (later, later))  # changed on disk since it was recorded
    os.remove(paths[1])  # no longer in the inputs
    return photos, out


def test_a_dry_run_counts_each_kind_and_touches_nothing(recorded, tiny_engine):
    photos, out = recorded
    before = _tree(os.path.dirname(out))
    plan = ground(str(photos), out, engine=tiny_engine, dry_run=True)
    facts = plan.as_dict()
    assert {k: facts[k] for k in ("images", "held", "new", "recorded", "failed", "changed", "other_settings")} == {
        "images": 7,  # the first run's 6, one deleted, two added
        "held": 6,
        "new": 2,
        "recorded": 3,
        "failed": 1,
        "changed": 1,
        "other_settings": 0,
    }
    assert (plan.todo, plan.prunable, plan.pruned) == (3, 1, 0)
    assert _tree(os.path.dirname(out)) == before  # no lock, no parts, the output as it was


@pytest.mark.parametrize(
    "options",
    [{}, {"retry_failed": True}, {"prune": True}, {"retry_failed": True, "prune": True}, {"overwrite": True}],
    ids=["plain", "retry-failed", "prune", "both", "overwrite"],
)
def test_the_run_then_does_what_the_dry_run_said(recorded, tiny_engine, options):
    photos, out = recorded
    plan = ground(str(photos), out, engine=tiny_engine, dry_run=True, **options)
    held = len(list(read_records(out)))
    summary = ground(str(photos), out, engine=tiny_engine, **options)
    assert summary.done + summary.failed == plan.todo
    after = len(list(read_records(out)))
    if options.get("overwrite"):
        assert after == plan.units
    else:
        assert after == held + plan.new - plan.pruned


def test_other_settings_are_named(recorded, tiny_engine):
    photos, out = recorded
    result = kosmos("ground", str(photos), "--out", out, "--dry-run", "--json", "--max-new-tokens", "5", "--model", "x")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["other_settings"] == 5 and set(facts["settings"]) == {"model", "decoding"}
    assert facts["todo"] == 5 + 2  # the recorded, with other settings, and the new; the failed one is skipped


def test_the_command_line_says_it_then_ends_with_one_line(recorded, tiny_model):
    photos, out = recorded
    result = kosmos("ground", str(photos), "--out", out, "--dry-run", "--model", tiny_model, "--max-new-tokens", "12")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(
        "kosmos ground --dry-run: todo=3 new=2 recorded=3 failed=1 "
    ) and result.stdout.rstrip().endswith(out)
    assert "failed before: skipped; --retry-failed does them again" in result.stderr
    assert "1 recorded for images no longer in the inputs: kept; --prune drops them" in result.stderr
    quiet = kosmos("ground", str(photos), "--out", out, "--dry-run", "-q")
    assert quiet.stderr == "" and quiet.stdout.startswith("kosmos ground --dry-run: ")


def test_a_dataset_folder_is_read_and_left_alone(tmp_path, tiny_engine):
    photos = tmp_path / "photos"
    make_images(str(photos))
    dataset = str(tmp_path / "ds") + "/"
    ground(str(photos), dataset, engine=tiny_engine)
    make_images(str(photos / "more"), sizes=[(64, 64)])
    before = _tree(dataset)
    plan = ground(str(photos), dataset, engine=tiny_engine, dry_run=True)
    assert (plan.held, plan.recorded, plan.new, plan.todo) == (4, 4, 1, 1)
    assert _tree(dataset) == before


def test_find_counts_phrases(tmp_path, tiny_engine):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=[(64, 64), (80, 64)])
    out = str(tmp_path / "found.jsonl")
    find([str(photos)], out, phrases=["a dog"], engine=tiny_engine)
    plan = find([str(photos)], out, phrases=["a dog", "a cat", "a dog"], engine=tiny_engine, dry_run=True)
    assert (plan.images, plan.recorded, plan.new, plan.twice) == (2, 2, 2, 2)


def test_stdout_is_refused_and_json_needs_a_dry_run(tmp_path):
    make_images(str(tmp_path / "p"))
    one_error_line(kosmos("ground", str(tmp_path / "p"), "--dry-run"), 2, "--dry-run compares the inputs")
    one_error_line(kosmos("ground", str(tmp_path / "p"), "-o", str(tmp_path / "r.jsonl"), "--json"), 2, "--json is")


def test_no_model_is_loaded(tmp_path):
    """A model that cannot be had (offline, not cached) is never asked for; torch is not even imported."""
    make_images(str(tmp_path / "p"))
    code = (
        "import json, sys\n"
        "from kosmos_cli import ground\n"
        f"plan = ground({str(tmp_path / 'p')!r}, {str(tmp_path / 'r.parquet')!r}, model='nobody/no-such-model', "
        "dry_run=True)\n"
        "print(json.dumps([plan.todo, 'torch' in sys.modules, 'transformers' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [4, False, False]
    assert not os.path.exists(tmp_path / "r.parquet")
