"""model/quantize.py: int8 weights on the CPU (`quantize="int8"`), on the shapes checkpoint: the records say so in their
`decoding`, so a float32 run redoes them and the other way round; CUDA, another dtype, an unknown mode, a torch
build without int8 kernels and a checkpoint whose layers cannot take int8 are each one line, before any image is
read, and `int8-or-float32` goes on in float32 instead."""

import json
import logging

import pytest
import shapes  # tools/shapes.py
import torch

from kosmos_cli import ground, load_engine
from kosmos_cli.errors import ModelError, UsageError
from kosmos_cli.model import quantize
from kosmos_cli.model.engine import ModelOptions
from kosmos_cli.output.reader import read_records


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Eight shapes scenes: their paths, and the shapes truly in each."""
    truth = shapes.write_scenes(tmp_path_factory.mktemp("scenes"), n=8, seed=11)
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    return [r["path"] for r in rows], [[shapes.Shape(**s) for s in r["shapes"]] for r in rows]


def _int8_layers(model) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)}


def test_int8_weights_go_to_the_encoder_and_the_decoder_layers_and_records_say_so(shapes_model, scenes, tmp_path):
    paths, truth = scenes
    engine = load_engine(shapes_model, quantize="int8", max_new_tokens=48)
    assert engine.quantized == "int8"
    layers = _int8_layers(engine.model)
    assert any(n.startswith("vision_model.") for n in layers) and any(n.startswith("text_model.model.") for n in layers)
    assert "text_model.lm_head" in layers and not any(n.startswith("image_to_text_projection") for n in layers)
    out = str(tmp_path / "r.jsonl")
    summary = ground(paths, out, engine=engine)
    rows = list(read_records(out))
    assert summary.done == 8 and {r["decoding"] for r in rows} == {"greedy max_new_tokens=48 quantize=int8"}
    hits = sum(shapes.boxed(r["entities"], objs) for r, objs in zip(rows, truth))
    assert hits >= 0.8 * sum(map(len, truth))  # approximate, still grounding


def test_a_float32_run_redoes_int8_records_and_the_other_way_round(shapes_model, scenes, tmp_path):
    paths, _ = scenes
    out = str(tmp_path / "r.parquet")
    first = ground(paths, out, model=shapes_model, max_new_tokens=16, quantize="int8")
    again = ground(paths, out, model=shapes_model, max_new_tokens=16, quantize="int8")
    assert (first.done, again.done, again.skipped) == (8, 0, 8)
    plain = ground(paths, out, model=shapes_model, max_new_tokens=16)
    assert (plain.done, plain.redone) == (8, 8)
    assert {r["decoding"] for r in read_records(out)} == {"greedy max_new_tokens=16"}
    back = ground(paths, out, model=shapes_model, max_new_tokens=16, quantize="int8")
    assert (back.done, back.redone) == (8, 8)


@pytest.mark.parametrize(
    "device, dtype, mode, says",
    [
        ("cuda", "auto", "int8", "quantize int8 is for the CPU: on CUDA use --dtype bfloat16"),
        ("cuda:1", "auto", "int8-or-float32", "quantize int8 is for the CPU: on CUDA use --dtype bfloat16"),
        ("cpu", "bfloat16", "int8", "quantize int8 computes around its int8 weights in float32: drop --dtype bfloat16"),
        ("cpu", "auto", "int4", "unknown quantization 'int4' (quantize): use int8, or int8-or-float32"),
    ],
)
def test_what_int8_cannot_do_is_one_line(device, dtype, mode, says):
    with pytest.raises(UsageError, match="^" + says.replace("(", r"\(").replace(")", r"\)")) as refused:
        quantize.check(mode, device, dtype)
    assert refused.value.param == "quantize" and "\n" not in str(refused.value)
    with pytest.raises(UsageError, match="quantize"):
        ModelOptions(device=device, dtype=dtype, quantize=mode)  # checked where the options are made


def test_on_an_auto_device_that_is_cuda_apply_refuses_it(shapes_model):
    from transformers import Kosmos2ForConditionalGeneration

    model = Kosmos2ForConditionalGeneration.from_pretrained(shapes_model)
    with pytest.raises(UsageError, match="on CUDA use --dtype bfloat16"):
        quantize.apply(model, "int8", "cuda:0")  # what `auto` resolved to on a GPU host
    assert not _int8_layers(model)


@pytest.fixture
def no_int8_kernels(monkeypatch):
    """A torch build whose quantized engines are none (as some builds for other CPUs are)."""
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", property(lambda self: ["none"]))


def test_without_int8_kernels_int8_stops_before_any_image_is_read(no_int8_kernels, shapes_model, scenes, tmp_path):
    paths, _ = scenes
    out = tmp_path / "r.jsonl"
    with pytest.raises(UsageError, match=r"^quantize int8: this torch build .* has no int8 kernels .* int8-or-float32"):
        ground(paths, str(out), model=shapes_model, quantize="int8")
    assert not out.exists()


def test_int8_or_float32_goes_on_in_float32_and_says_so(no_int8_kernels, shapes_model, scenes, tmp_path, caplog):
    paths, _ = scenes
    out = str(tmp_path / "r.jsonl")
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        engine = load_engine(shapes_model, quantize="int8-or-float32", max_new_tokens=8)
    assert engine.quantized is None and not _int8_layers(engine.model)
    assert "going on in float32" in caplog.text and "no int8 kernels" in caplog.text
    ground(paths[:2], out, engine=engine)
    assert {r["decoding"] for r in read_records(out)} == {"greedy max_new_tokens=8"}  # what it really was


def test_a_checkpoint_whose_layers_cannot_take_int8(shapes_model, caplog):
    from transformers import Kosmos2ForConditionalGeneration

    model = Kosmos2ForConditionalGeneration.from_pretrained(shapes_model, dtype=torch.bfloat16)
    with pytest.raises(ModelError, match=r"^--quantize int8: the checkpoint's vision_model is not in float32; pass"):
        quantize.apply(model, "int8", "cpu")
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        assert quantize.apply(model, "int8-or-float32", "cpu") is None
    assert "going on in float32" in caplog.text and not _int8_layers(model)
    with pytest.raises(ModelError, match="no vision_model"):
        quantize.apply(torch.nn.Sequential(torch.nn.Linear(2, 2)), "int8", "cpu")


def test_int8_weights_read_layer_by_layer_are_the_ones_quantizing_the_float_model_gives(shapes_model, scenes):
    """--quantize int8 reads each float layer, quantizes it and frees it before the next (the float32 model never
    exists whole: benchmarks/bench_cpu.py measures the peak), and gets the very weights and tokens quantizing the
    whole float32 model in place gives."""
    import weakref

    from PIL import Image
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from kosmos_cli.model.engine import Engine, GenerationOptions
    from kosmos_cli.model.prompts import caption_prompt

    read: list = []  # weak references to the float weight matrices read, in order
    alive_at_each_read: list = []
    real_read, real_from_pretrained = quantize._read_into, Kosmos2ForConditionalGeneration.from_pretrained

    def watched(tensor, *where):
        alive_at_each_read.append(sum(ref() is not None for ref in read))
        real_read(tensor, *where)
        read.append(weakref.ref(tensor))

    def refused(*args, **kwargs):
        raise AssertionError("from_pretrained loaded the float32 model whole")

    try:
        quantize._read_into = watched
        Kosmos2ForConditionalGeneration.from_pretrained = refused
        engine = load_engine(shapes_model, quantize="int8", max_new_tokens=24)
    finally:
        quantize._read_into, Kosmos2ForConditionalGeneration.from_pretrained = real_read, real_from_pretrained
    assert engine.quantized == "int8" and not engine.model.training
    kept = sum(ref() is not None for ref in read)  # embeddings, norms, the projection: float32 weights the model keeps
    assert len(read) - kept >= 20  # the linear layers' float weights, each freed once its int8 copy was made...
    assert max(alive_at_each_read) <= kept + 2  # ...before the next was read (a weight and its bias at most)

    model = Kosmos2ForConditionalGeneration.from_pretrained(shapes_model).eval()
    quantize._quantize(model)  # the float32 model whole, quantized in place (what --quantize int8 did before)
    ours, theirs = dict(engine.model.named_modules()), dict(model.named_modules())
    assert _int8_layers(engine.model) == _int8_layers(model)
    for name in _int8_layers(model):
        (w1, b1), (w2, b2) = ours[name]._packed_params._weight_bias(), theirs[name]._packed_params._weight_bias()
        assert torch.equal(w1.int_repr(), w2.int_repr()) and torch.equal(w1.dequantize(), w2.dequantize())
        assert (b1 is None and b2 is None) or torch.equal(b1, b2)
    mine, others = engine.model.state_dict(), model.state_dict()
    assert mine.keys() == others.keys()
    for key in mine:
        if isinstance(mine[key], torch.Tensor) and not mine[key].is_quantized:
            assert torch.equal(mine[key], others[key]), key
    theirs_engine = Engine.from_model(model, AutoProcessor.from_pretrained(shapes_model), GenerationOptions(24))
    images = [Image.open(p).convert("RGB") for p in scenes[0]]
    batch = [engine.prepare(img, caption_prompt(), image_key=i) for i, img in enumerate(images)]
    assert [g.ids for g in engine.forward_scored(batch)] == [g.ids for g in theirs_engine.forward_scored(batch)]


def test_a_checkpoint_whose_names_differ_is_left_to_transformers_loading(tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    folder = tmp_path / "renamed"
    shutil.copytree(tiny_model, folder)
    config = AutoConfig.from_pretrained(folder)
    assert quantize.load(str(folder), config, {}) is not None
    weights = load_file(folder / "model.safetensors")
    save_file({k.replace("vision_model.", "vision."): v for k, v in weights.items()}, folder / "model.safetensors")
    assert quantize.load(str(folder), config, {}) is None  # from_pretrained (and its key mappings) loads it instead
