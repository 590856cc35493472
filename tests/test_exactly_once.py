"""Any manifest a user has, and exactly once on every resume path: --prune after an incomplete pass, rows whose
keys collide, an image that cannot be read this time, and the spool that several processes write for stdout."""

import shutil

import pytest

from cli_helpers import kosmos
from conftest import make_images
from kosmos_cli import ground
from kosmos_cli.writers import read_records


def paths_in(out):
    return sorted(r["path"] for r in read_records(str(out)))


# -- --prune only after a pass that saw every input -----------------------------------------------------------
@pytest.fixture
def recorded(tiny_engine, tmp_path):
    """Three images, all recorded in results.jsonl."""
    photos = sorted(make_images(str(tmp_path / "photos"), sizes=((64, 48), (48, 64), (40, 40))))
    out = tmp_path / "results.jsonl"
    ground(photos, str(out), engine=tiny_engine)
    return photos, out


def test_prune_after_a_manifest_that_fails_mid_pass_keeps_every_record(recorded, tiny_model, tmp_path):
    """A CSV whose last row cannot be read (a field over 128 KiB): the run stops with exit 2 and prunes nothing."""
    photos, out = recorded
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,note\n{photos[0]},a\n{photos[1]},{'x' * 200_000}\n")
    before = out.read_text()
    result = kosmos("ground", str(manifest), "--out", str(out), "--prune", model=tiny_model)
    assert result.exit_code == 2 and "line 3" in result.stderr
    assert out.read_text() == before


def test_prune_after_a_txt_manifest_that_cannot_be_read_keeps_every_record(recorded, tiny_engine, tmp_path):
    """A .txt manifest whose read fails with an I/O error (as on a network share that went away) after an image
    was done: the error comes out and no record is pruned."""
    photos, out = recorded
    manifest = tmp_path / "list.txt"
    manifest.symlink_to("/proc/self/mem")  # reading it is a real EIO
    with pytest.raises(OSError):
        ground([photos[0], str(manifest)], str(out), engine=tiny_engine, prune=True)
    assert paths_in(out) == photos


def test_prune_over_a_folder_it_cannot_list_keeps_the_records_under_it(tiny_model, tmp_path):
    """photos/nas is a link to a disk that is not mounted tonight: its records stay, and the run says why."""
    disk = tmp_path / "disk"
    make_images(str(disk), sizes=((64, 48), (48, 64)))
    photos = tmp_path / "photos"
    make_images(str(photos / "here"), sizes=((40, 40),))
    (photos / "nas").symlink_to(disk, target_is_directory=True)
    out = tmp_path / "results.jsonl"
    assert kosmos("ground", str(photos), "--out", str(out), model=tiny_model).exit_code == 0
    assert len(paths_in(out)) == 3
    shutil.rmtree(disk)
    result = kosmos("ground", str(photos), "--out", str(out), "--prune", model=tiny_model)
    assert result.exit_code == 0, result.output
    assert len(paths_in(out)) == 3
    warnings = [line for line in result.stderr.splitlines() if "--prune" in line]
    assert len(warnings) == 1 and str(photos / "nas") in warnings[0], result.stderr
