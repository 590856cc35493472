"""Any manifest a user has, and exactly once on every resume path: --prune after an incomplete pass, rows whose
keys collide, an image that cannot be read this time, and the spool that several processes write for stdout."""

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
