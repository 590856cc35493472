"""The batch size: chosen from the card's free memory when not given, halved on an out-of-memory error and kept
halved for the rest of the run; only a request that does not fit alone fails, as an error record."""

import pytest
import torch

from kosmos_cli import ground, load_engine, read_records
from kosmos_cli.model.batch_size import DEFAULT_BATCH_SIZE, choose_batch_size, row_bytes
from kosmos_cli.model.engine import GenerationOptions
from kosmos_cli.run.pipeline import RunOptions
from tests.e2e.test_decoder import scenes

GiB = 1 << 30
MiB = 1 << 20


@pytest.mark.parametrize(
    ("free", "model", "row", "expected"),
    [
        (135 * GiB, 3 * GiB, 110 * MiB, 256),  # an H200: the most, 256
        (75 * GiB, 3 * GiB, 110 * MiB, 256),  # an 80 GB card
        (21 * GiB, 3 * GiB, 110 * MiB, 128),  # a 24 GB card: 150 rows fit, the power of two below
        (11 * GiB, 3 * GiB, 110 * MiB, 64),  # 74 rows fit
        (8 * GiB, 3 * GiB, 110 * MiB, 32),  # fewer than 64 fit: what fits
        (int(1.2 * GiB), 3 * GiB, 110 * MiB, 1),  # nothing fits: 1 (and the out-of-memory path decides)
        (0, 3 * GiB, 110 * MiB, 1),
        (135 * GiB, 3 * GiB, 1, 256),
    ],
)
def test_the_batch_size_is_chosen_from_free_memory(free, model, row, expected):
    assert choose_batch_size(free, model, row) == expected


def test_a_full_size_row_is_about_a_hundred_megabytes_in_bfloat16():
    from transformers import Kosmos2Config

    size = row_bytes(Kosmos2Config(), GenerationOptions(128), torch.bfloat16)
    assert 60 * MiB < size < 200 * MiB
    assert row_bytes(Kosmos2Config(), GenerationOptions(128), torch.float32) > size


def test_on_the_cpu_the_default_is_8_and_a_given_size_is_kept(tiny_engine):
    assert tiny_engine.batch_size() == DEFAULT_BATCH_SIZE == 8
    assert tiny_engine.batch_size(3) == 3
    assert RunOptions().batch_size is None  # not given: the engine chooses


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(scenes(12)):
        image.save(folder / f"{i:02d}.png")
    return folder


def run(folder, out, engine, batch_size):
    ground([str(folder)], str(out), engine=engine, batch_size=batch_size)
    return sorted(
        ({k: v for k, v in r.items() if k != "seconds"} for r in read_records(str(out))), key=lambda r: r["path"]
    )


def failing_above(engine, monkeypatch, most):
    """engine.forward_scored raises torch.OutOfMemoryError on batches of more than `most` requests (a real one cannot
    be provoked on the CPU); returns the list of batch sizes it was called with."""
    sizes: list[int] = []
    forward = engine.forward_scored

    def forward_scored(batch, stop_at=None):
        sizes.append(len(batch))
        if len(batch) > most:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(batch, stop_at)

    monkeypatch.setattr(engine, "forward_scored", forward_scored)
    return sizes


def test_out_of_memory_halves_the_batch_and_keeps_it_halved(shapes_model, folder, tmp_path, monkeypatch, caplog):
    expected = run(folder, tmp_path / "plain.jsonl", load_engine(shapes_model, max_new_tokens=16), 8)
    engine = load_engine(shapes_model, max_new_tokens=16)
    sizes = failing_above(engine, monkeypatch, 2)
    got = run(folder, tmp_path / "oom.jsonl", engine, 8)
    assert got == expected and len(got) == 12 and all(r["status"] == "ok" for r in got)
    # the first batch of 8: 8 fails, 4 fails, then 2 at a time; the second batch of 4 goes at 2 straight away
    assert sizes == [8, 4, 2, 2, 2, 2, 2, 2]
    assert engine.fits == 2
    assert sum("out of GPU memory at batch" in r.message for r in caplog.records) == 2


def test_when_even_one_request_does_not_fit_its_records_fail_and_the_run_goes_on(
    shapes_model, folder, tmp_path, monkeypatch
):
    engine = load_engine(shapes_model, max_new_tokens=4)
    sizes = failing_above(engine, monkeypatch, 0)
    got = run(folder, tmp_path / "oom.jsonl", engine, 4)
    assert len(got) == 12 and all(r["status"] == "error" for r in got)
    assert "out of GPU memory on a single image" in got[0]["error"]
    assert sizes[:3] == [4, 2, 1]
