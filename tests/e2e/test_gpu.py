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


def _shapes_engines(shapes_model, device, new_tokens=24):
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from kosmos_cli.model.engine import Engine, GenerationOptions

    model = Kosmos2ForConditionalGeneration.from_pretrained(shapes_model).to(device)
    processor = AutoProcessor.from_pretrained(shapes_model)
    hf = Engine.from_model(model, processor, GenerationOptions(new_tokens, decoder="hf"))
    fast = Engine.from_model(model, processor, GenerationOptions(new_tokens, decoder="fast"))
    return hf, fast


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_graphs_are_captured_on_the_models_device_not_the_current_one(shapes_model):
    from tests.e2e.test_decoder import PROMPTS, batch_of, hf_answers, scenes

    hf, fast = _shapes_engines(shapes_model, "cuda:1")
    batch = batch_of(hf, scenes(4), PROMPTS[:4])
    expected = [ids for ids, _ in hf_answers(hf, batch, "</object>")]
    torch.cuda.set_device(0)
    with torch.inference_mode():
        got = [g.ids for g in fast.forward_scored(batch, "</object>")]
    assert fast.decoder.captured >= 1 and fast.decoder.graphs  # captured on cuda:1, not fallen back to eager
    assert fast.decoder.cuda_graphs.capture.side.device == torch.device("cuda:1")
    assert torch.cuda.current_device() == 0 and got == expected


def test_a_failed_capture_leaves_the_current_stream_as_it_was(shapes_model, monkeypatch):
    from kosmos_cli.model.decoder import Decoder
    from tests.e2e.test_decoder import PROMPTS, batch_of, hf_answers, scenes

    hf, fast = _shapes_engines(shapes_model, "cuda")
    decoder = fast.decoder = Decoder(fast.model, 24, fast._pad, graphs=True)
    real_step = decoder._step
    calls = []

    def refusing(ws, span):  # the second call of the first step is its capture: a sync there breaks it
        calls.append(span)
        real_step(ws, span)
        if len(calls) == 2:
            ws.step.item()

    monkeypatch.setattr(decoder, "_step", refusing)
    before = torch.cuda.current_stream()
    batch = batch_of(hf, scenes(4), PROMPTS[:4])
    with torch.inference_mode():
        got = [g.ids for g in fast.forward_scored(batch, "</object>")]
    assert torch.cuda.current_stream() == before
    assert not decoder.graphs and decoder.captured == 0  # went on eagerly...
    assert got == [ids for ids, _ in hf_answers(hf, batch, "</object>")]  # ...with generate's tokens


def test_running_out_of_memory_during_a_capture_halves_the_batch(shapes_model, monkeypatch):
    from kosmos_cli.model.decoder import Decoder
    from tests.e2e.test_decoder import PROMPTS, batch_of, scenes

    hf, fast = _shapes_engines(shapes_model, "cuda")
    decoder = fast.decoder = Decoder(fast.model, 24, fast._pad, graphs=True)
    real_step = decoder._step
    calls = []

    def hungry(ws, span):  # the capture of bucket 8 asks for more memory than any card has
        calls.append(ws.rows)
        real_step(ws, span)
        if ws.rows == 8 and calls.count(8) == 2:
            torch.empty(1 << 46, dtype=torch.uint8, device=ws.step.device)

    monkeypatch.setattr(decoder, "_step", hungry)
    with torch.inference_mode():
        got = fast.forward_scored_safe(batch_of(hf, scenes(8), PROMPTS), "</object>")
    assert len(got) == 8 and fast.fits == 4
    assert decoder.graphs and decoder.captured >= 1
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_pixels_are_collated_pinned_and_normalised_on_the_card_to_the_cpus_values(shapes_model):
    import numpy as np
    from PIL import Image

    from kosmos_cli import load_engine
    from kosmos_cli.model.engine import Prepared

    engine = load_engine(shapes_model, device="cuda", dtype="float32")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (200 + 9 * i, 300, 3), dtype=np.uint8)) for i in range(4)]
    collated = engine.collate([Prepared(i, engine.pixels(im), (0,), (0,)) for i, im in enumerate(images)])
    assert collated.pixels.is_pinned() and collated.pixels.dtype == torch.uint8
    on_card = collated.on_device(engine.device, torch.float32)
    assert on_card.device.type == "cuda"
    expected = [engine.processor.image_processor(images=[im], return_tensors="np")["pixel_values"][0] for im in images]
    assert np.array_equal(on_card.cpu().numpy(), np.stack(expected))
