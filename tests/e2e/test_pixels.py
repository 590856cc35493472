"""pixels.ClipPixels and collation: the vision encoder's input without the image processor's passes, bit for bit what
it gives. A loader hands on uint8 at the model's size; a batch is collated once (uint8, pinned on CUDA) and normalised
on the device, in the model's dtype."""

import json

import numpy as np
import pytest
from PIL import Image

from kosmos_cli import ground, load_engine
from kosmos_cli.model import pixels as pixels_module
from kosmos_cli.model.engine import Engine, Prepared
from kosmos_cli.model.pixels import ClipPixels
from kosmos_cli.output.reader import read_records
from tests.helpers import build_processor, make_images


def _photo(width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def _engine(image_processor=None):
    engine = Engine()
    engine.processor = build_processor()
    if image_processor is not None:
        engine.processor.image_processor = image_processor
    return engine


def _by_processor(engine, image):
    return engine.processor.image_processor(images=[image], return_tensors="np")["pixel_values"][0]


def _model_input(engine, *images, dtype=None):
    """What the vision encoder gets for `images` (one request each), on the CPU, as numpy float32."""
    import torch

    batch = [Prepared(i, engine.pixels(image), (0,), (0,)) for i, image in enumerate(images)]
    on_device = engine.collate(batch).on_device("cpu", dtype or torch.float32)
    assert on_device.dtype == (dtype or torch.float32)
    return on_device.float().numpy()


@pytest.mark.parametrize("size", [(224, 224), (640, 480), (480, 640), (1024, 768), (895, 448), (7, 300), (1, 1)])
def test_pixels_are_the_processors_bit_for_bit(size):
    engine = _engine()
    image = _photo(*size, seed=size[0])
    pixels = engine.pixels(image)  # what a loader hands on: uint8, a quarter of float32's bytes
    assert engine._clip_pixels is not None  # the direct path was taken
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 224, 224) and pixels.flags["C_CONTIGUOUS"]
    expected = _by_processor(engine, image)
    model_input = _model_input(engine, image)[0]
    assert expected.dtype == np.float32 and model_input.shape == expected.shape == (3, 224, 224)
    assert np.array_equal(model_input, expected)  # normalised after collation, on the device: the same bits


def test_kosmos2s_own_settings_square_size_and_a_centre_crop_to_it_are_taken_and_exact():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    hub = CLIPImageProcessorPil(  # microsoft/kosmos-2-patch14-224's preprocessor_config.json
        size={"shortest_edge": 224},
        use_square_size=True,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        resample=3,
    )
    engine = _engine(hub)
    image = _photo(333, 500, seed=3)
    assert np.array_equal(_model_input(engine, image)[0], _by_processor(engine, image))
    assert engine._clip_pixels is not None
    default = ClipPixels.default()
    assert np.array_equal(default(image), _model_input(engine, image)[0])
    assert np.array_equal(default.chw(image), engine.pixels(image))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK"])
def test_other_modes_go_through_the_processor(mode):
    engine = _engine()
    image = _photo(300, 200, mode=mode)
    assert engine.pixels(image).dtype == np.float32  # the processor's own output
    assert np.array_equal(engine.pixels(image), _by_processor(engine, image))
    assert np.array_equal(_model_input(engine, image)[0], _by_processor(engine, image))


@pytest.mark.parametrize(
    "settings",
    [
        {"size": {"shortest_edge": 224}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
        {"size": {"height": 256, "width": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
        {"size": {"height": 224, "width": 224}, "do_normalize": False},
        {"size": {"height": 224, "width": 224}, "do_rescale": False},
    ],
)
def test_settings_it_does_not_compute_go_through_the_processor(settings):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(**settings)
    assert ClipPixels.of(processor) is None
    engine = _engine(processor)
    image = _photo(320, 240)
    assert np.array_equal(engine.pixels(image), _by_processor(engine, image))
    assert np.array_equal(_model_input(engine, image)[0], _by_processor(engine, image))


def test_a_processor_on_another_backend_is_left_to_itself():
    class Torchvision:
        backend = "torchvision"

    assert ClipPixels.of(Torchvision()) is None
    assert ClipPixels.of(object()) is None


def test_records_are_the_same_through_clip_pixels_or_the_processor(tiny_model, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=[(40 + 7 * i, 64 - 3 * i) for i in range(6)])
    rows = {}
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(pixels_module.ClipPixels, "of", classmethod(lambda cls, processor: None))
        engine = load_engine(tiny_model, max_new_tokens=12)
        out = tmp_path / f"direct-{direct}.jsonl"
        ground([str(photos)], str(out), engine=engine, batch_size=4)
        assert (engine._clip_pixels is not None) == direct
        rows[direct] = [{k: v for k, v in r.items() if k != "seconds"} for r in read_records(str(out))]
    assert json.dumps(rows[True], sort_keys=True) == json.dumps(rows[False], sort_keys=True)


def test_a_batch_mixing_uint8_and_the_processors_float32_gives_each_the_processors_values():
    engine = _engine()
    rgb, grey = _photo(300, 200, seed=1), _photo(200, 300, seed=2, mode="L")
    got = _model_input(engine, rgb, grey, rgb)
    for row, image in zip(got, (rgb, grey, rgb)):
        assert np.array_equal(row, _by_processor(engine, image))


def test_collation_stacks_each_image_once_as_uint8_not_pinned_on_the_cpu():
    import torch

    engine = _engine()
    images = [_photo(64 + i, 48, seed=i) for i in range(3)]
    batch = [Prepared(k, engine.pixels(images[k]), (0,), (0,)) for k in (0, 0, 1, 2, 1)]
    collated = engine.collate(batch)
    assert collated.pixels.dtype == torch.uint8 and tuple(collated.pixels.shape) == (3, 3, 224, 224)
    assert collated.index == (0, 0, 1, 2, 1) and not collated.pixels.is_pinned()  # pinned only for CUDA
    assert engine.collate(collated) is collated and len(collated) == 5
    piece = collated.piece(2, 4)  # requests 2 and 3: images 1 and 2, a view
    assert piece.index == (0, 1) and piece.pixels.data_ptr() == collated.pixels[1].data_ptr()
    assert np.array_equal(piece.on_device("cpu", torch.float32)[1].numpy(), _by_processor(engine, images[2]))


def test_normalised_on_the_device_in_a_lower_dtype_is_the_float32_values_cast():
    import torch

    engine = _engine()
    image = _photo(320, 240, seed=5)
    expected = torch.from_numpy(_by_processor(engine, image)).to(torch.bfloat16)
    got = _model_input(engine, image, dtype=torch.bfloat16)[0]
    assert torch.equal(torch.from_numpy(got), expected.float())


def test_the_devices_gather_gives_the_cpus_lookup():
    import torch

    engine = _engine()
    images = [_photo(300, 200, seed=7), _photo(123, 456, seed=8)]
    collated = engine.collate([Prepared(i, engine.pixels(im), (0,), (0,)) for i, im in enumerate(images)])
    gathered = collated.clip.gather(collated.pixels, torch.float32)  # what runs on CUDA, here on the CPU
    assert torch.equal(gathered, collated.on_device("cpu", torch.float32))
    for row, image in zip(gathered.numpy(), images):
        assert np.array_equal(row, _by_processor(engine, image))


def test_host_memory_that_cannot_be_pinned_is_ordinary_memory():
    import torch

    from kosmos_cli.model.device import host_empty

    got = host_empty((2, 3), torch.uint8, pin=True)  # no CUDA here: nothing can be page-locked
    assert got.shape == (2, 3) and got.dtype == torch.uint8
    assert got.is_pinned() == torch.cuda.is_available()
    assert not host_empty((1,), torch.long, pin=False).is_pinned()


def test_with_the_model_on_the_cpu_the_loaders_normalise_and_the_model_input_is_the_same(tiny_engine):
    """On the CPU there is no copy to save: a loader hands on the processor's float32 (the model's thread only casts),
    the same model input as the uint8 path a GPU takes."""
    import torch

    image = _photo(640, 480, seed=11)
    assert str(tiny_engine.device) == "cpu"
    pixels = tiny_engine.pixels(image)
    assert pixels.dtype == np.float32 and np.array_equal(pixels, _by_processor(tiny_engine, image))
    collated = tiny_engine.collate([Prepared(0, pixels, (0,), (0,))])
    assert collated.clip is None and collated.pixels.dtype == torch.float32
    elsewhere = _engine()  # no device yet: uint8, normalised where the model is
    assert elsewhere.pixels(image).dtype == np.uint8
    assert np.array_equal(collated.on_device("cpu", torch.float32).numpy(), _model_input(elsewhere, image))
