"""engine.ClipPixels: the model's pixels without the image processor's passes, bit for bit what it gives."""

import json

import numpy as np
import pytest
from PIL import Image

from kosmos_cli import ground, load_engine
from kosmos_cli.model import engine as engine_module
from kosmos_cli.model.engine import ClipPixels, Engine
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


@pytest.mark.parametrize("size", [(224, 224), (640, 480), (480, 640), (1024, 768), (895, 448), (7, 300), (1, 1)])
def test_pixels_are_the_processors_bit_for_bit(size):
    engine = _engine()
    image = _photo(*size, seed=size[0])
    pixels = engine.pixels(image)
    assert engine._clip_pixels is not None  # the direct path was taken
    expected = _by_processor(engine, image)
    assert pixels.dtype == expected.dtype == np.float32 and pixels.shape == expected.shape == (3, 224, 224)
    assert np.array_equal(pixels, expected) and pixels.flags["C_CONTIGUOUS"]


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
    assert np.array_equal(engine.pixels(image), _by_processor(engine, image))
    assert engine._clip_pixels is not None
    default = ClipPixels.default()
    assert np.array_equal(default(image), engine.pixels(image))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK"])
def test_other_modes_go_through_the_processor(mode):
    engine = _engine()
    image = _photo(300, 200, mode=mode)
    assert np.array_equal(engine.pixels(image), _by_processor(engine, image))


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
            monkeypatch.setattr(engine_module.ClipPixels, "of", classmethod(lambda cls, processor: None))
        engine = load_engine(tiny_model, max_new_tokens=12)
        out = tmp_path / f"direct-{direct}.jsonl"
        ground([str(photos)], str(out), engine=engine, batch_size=4)
        assert (engine._clip_pixels is not None) == direct
        rows[direct] = [{k: v for k, v in r.items() if k != "seconds"} for r in read_records(str(out))]
    assert json.dumps(rows[True], sort_keys=True) == json.dumps(rows[False], sort_keys=True)
