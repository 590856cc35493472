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


def test_cuda_graphs_give_the_tokens_of_the_eager_step_and_of_generate(shapes_model):
    """The captured decode step (graphs, padded buckets, rows moved to a smaller bucket) against the same step run
    eagerly and against generate, on the card in float32, prompts of mixed lengths in one batch."""
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from kosmos_cli.model.decoder import Decoder
    from kosmos_cli.model.engine import Engine, GenerationOptions
    from tests.e2e.test_decoder import PROMPTS, batch_of, hf_answers, scenes

    model = Kosmos2ForConditionalGeneration.from_pretrained(shapes_model).to("cuda")
    processor = AutoProcessor.from_pretrained(shapes_model)
    hf = Engine.from_model(model, processor, GenerationOptions(40, decoder="hf"))
    fast = Engine.from_model(model, processor, GenerationOptions(40, decoder="fast"))
    batch = batch_of(hf, scenes(8)[:7], PROMPTS[:7])  # 7 rows: padded to a bucket of 8
    expected = [ids for ids, _ in hf_answers(hf, batch, "</object>")]
    with torch.inference_mode():
        graphs = Decoder(model, 40, fast._pad, graphs=True)
        fast.decoder = graphs
        captured = [g.ids for g in fast.forward_scored(batch, "</object>")]
        fast.decoder = Decoder(model, 40, fast._pad, graphs=False, buckets=True)
        eager = [g.ids for g in fast.forward_scored(batch, "</object>")]
    assert graphs.captured >= 1 and graphs.graphs  # captured, not fallen back to eager
    assert captured == eager == expected
