"""Memory bound on loading: with `draft`, any format comes back small (width/height still the full size);
without it (drawing) at full size; large decodes are capped in number."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

from kosmos_cli.inputs import images
from kosmos_cli.inputs.images import load_image


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("ext", ["png", "webp", "bmp", "tif", "jpg"])
def test_a_large_image_comes_back_small_with_its_full_size(tmp_path, ext):
    path = tmp_path / f"big.{ext}"
    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(path)
    loaded = load_image(str(path), draft=448)
    assert (loaded.width, loaded.height) == (3000, 2000)
    assert loaded.image.size == (750, 500)  # shrunk by 4: the shorter side between 448 and 896
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((10, 10))[0] > 180


def test_the_aspect_ratio_is_kept(tmp_path):
    path = tmp_path / "panorama.png"
    Image.new("RGB", (9000, 1800)).save(path)
    loaded = load_image(str(path), draft=448)
    assert (loaded.width, loaded.height) == (9000, 1800)
    assert loaded.image.size == (2250, 450)


def test_a_short_side_under_twice_draft_is_not_reduced(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (5000, 600)).save(path)
    assert load_image(str(path), draft=448).image.size == (5000, 600)


def test_drawing_still_gets_the_full_image(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)
    assert load_image(str(path)).image.size == (3000, 2000)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_reduced_image_is_still_turned_as_displayed(tmp_path, orientation):
    stored = Image.new("RGB", (3000, 2000), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 500, 500))  # a red mark in the stored top-left corner
    path = tmp_path / "o.png"
    stored.save(path, exif=_exif(orientation))
    loaded = load_image(str(path), draft=448)
    full = load_image(str(path))
    assert (loaded.width, loaded.height) == full.image.size
    w, h = loaded.image.size
    assert (w > h) == (loaded.width > loaded.height)
    a = np.asarray(full.image.resize((64, 64), Image.BOX), dtype=float)
    b = np.asarray(loaded.image.resize((64, 64), Image.BOX), dtype=float)
    assert np.abs(a - b).mean() < 3.0


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "1", "L", "CMYK"])
def test_every_mode_is_reduced_to_rgb(tmp_path, mode):
    img = Image.new(mode, (2000, 1000))
    path = tmp_path / ("m.tif" if mode in ("I;16", "CMYK") else "m.png")
    img.save(path)
    loaded = load_image(str(path), draft=448)
    assert loaded.error is None, loaded.error
    assert loaded.image.mode == "RGB" and loaded.image.size == (1000, 500)


def test_transparent_pixels_stay_white_when_reduced(tmp_path):
    img = Image.new("RGBA", (2000, 2000), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 1000, 2000))
    path = tmp_path / "t.png"
    img.save(path)
    small = load_image(str(path), draft=448).image
    assert small.getpixel((small.size[0] - 1, 5)) == (255, 255, 255)
    assert small.getpixel((0, 5)) == (255, 0, 0)


def test_sixteen_bit_grey_keeps_its_scale_when_reduced(tmp_path):
    img = Image.fromarray(np.full((1000, 1000), 32768, dtype=np.uint16))
    path = tmp_path / "g.png"
    img.save(path)
    assert 120 <= load_image(str(path), draft=448).image.getpixel((0, 0))[0] <= 136


def test_at_most_a_few_large_decodes_at_once(tmp_path, monkeypatch):
    class Counting:
        def __init__(self):
            self.inner, self.now, self.most, self.lock = threading.BoundedSemaphore(2), 0, 0, threading.Lock()

        def acquire(self):
            self.inner.acquire()
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.05)

        def release(self):
            with self.lock:
                self.now -= 1
            self.inner.release()

    counting = Counting()
    monkeypatch.setattr(images, "LARGE_PIXELS", 1000)
    monkeypatch.setattr(images, "_large", counting)
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (100, 100)).save(paths[-1])
    small = str(tmp_path / "small.png")
    Image.new("RGB", (10, 10)).save(small)
    threads = [threading.Thread(target=load_image, args=(p,), kwargs={"draft": 448}) for p in paths + [small]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.now == 0 and 1 <= counting.most <= 2
