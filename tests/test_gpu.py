"""On a CUDA device: the same run as on the CPU. Marked `gpu` and skipped where CUDA is not available."""

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _scenes(folder, n=8):
    import random

    import shapes  # tools/shapes.py

    folder.mkdir()
    rng = random.Random(4242)
    for i in range(n):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, _ = shapes.make_scene(rng, width, height)
        img.save(folder / f"scene_{i}.png")
    return folder


def _run(folder, out, **options):
    from kosmos_cli import ground, read_records

    summary = ground(str(folder), str(out), model=options.pop("model"), max_new_tokens=48, **options)
    assert summary.failed == 0
    return {r["path"]: (r["caption"], [e["boxes_px"] for e in r["entities"]]) for r in read_records(str(out))}


def test_cuda_in_float32_gives_the_cpu_captions_and_boxes(shapes_model, tmp_path):
    folder = _scenes(tmp_path / "scenes")
    cpu = _run(folder, tmp_path / "cpu.jsonl", model=shapes_model, device="cpu", dtype="float32")
    cuda = _run(folder, tmp_path / "cuda.jsonl", model=shapes_model, device="cuda", dtype="float32", batch_size=8)
    assert cuda == cpu


def test_cuda_in_bfloat16_grounds_every_image(shapes_model, tmp_path):
    folder = _scenes(tmp_path / "scenes")
    rows = _run(folder, tmp_path / "bf16.parquet", model=shapes_model, device="cuda", dtype="bfloat16")
    assert len(rows) == 8 and all(caption for caption, _ in rows.values())
