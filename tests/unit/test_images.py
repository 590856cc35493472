import numpy as np
import pytest
from PIL import Image

from kosmos_cli.inputs.images import load_image, to_rgb


def save_with_orientation(img, path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)


@pytest.mark.parametrize("orientation, size", [(1, (300, 200)), (3, (300, 200)), (6, (200, 300)), (8, (200, 300))])
def test_exif_orientation_gives_the_displayed_size_and_pixels(tmp_path, orientation, size):
    stored = Image.new("RGB", (300, 200), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 50, 50))  # a red mark in the stored top-left corner
    path = tmp_path / "o.png"
    save_with_orientation(stored, path, orientation)
    loaded = load_image(str(path))
    assert (loaded.width, loaded.height) == size == loaded.image.size
    red = np.argwhere(np.asarray(loaded.image)[:, :, 0] > 200)
    corner = {1: (0, 0), 3: (size[1] - 1, size[0] - 1), 6: (0, size[0] - 1), 8: (size[1] - 1, 0)}[orientation]
    assert any((abs(y - corner[0]) < 2 and abs(x - corner[1]) < 2) for y, x in red)


@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "RGBA", "P", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.new(mode, (20, 10))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    img = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert img.mode.startswith("I;16")
    assert 120 <= to_rgb(img).getpixel((0, 0))[0] <= 136


def test_transparency_is_laid_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    path = tmp_path / "t.png"
    img.save(path, transparency=0)
    assert load_image(str(path)).image.getpixel((0, 0)) == (255, 255, 255)


def test_animation_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(str(path)).image.getpixel((2, 2))[0] > 200


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"not an image at all", "not an image"),
    ],
)
def test_bad_files_are_values_not_exceptions(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    loaded = load_image(str(path))
    assert loaded.image is None and message in loaded.error


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "t.jpg"
    Image.new("RGB", (200, 200), (10, 200, 30)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    loaded = load_image(str(path))
    assert loaded.image is None and "decode" in loaded.error


def test_missing_file():
    assert load_image("/nope/x.jpg").error == "file not found"


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("1", (12000, 12000)).save(path)
    loaded = load_image(str(path), max_pixels=100_000_000)
    assert loaded.image is None and "limit" in loaded.error


def test_draft_decoding_keeps_size_and_barely_changes_the_model_input(tmp_path):
    """Pillow's draft mode on a large JPEG: same displayed size, nearly the same 224x224 model input."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((2400, 1800), Image.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    full = load_image(str(path))
    fast = load_image(str(path), draft=448)
    assert (fast.width, fast.height) == (full.width, full.height) == (2400, 1800)
    assert fast.image.size[0] < 2400  # it really decoded at a reduced scale
    a = np.asarray(full.image.resize((224, 224), Image.BICUBIC), dtype=float)
    b = np.asarray(fast.image.resize((224, 224), Image.BICUBIC), dtype=float)
    assert np.abs(a - b).mean() < 2.0  # out of 255: under 1%


def _special_files(tmp_path):
    """A FIFO with no writer, a unix socket, a link to /dev/zero: none may be opened the blocking way."""
    import os
    import socket

    os.mkfifo(tmp_path / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    return sock, [str(tmp_path / n) for n in ("pipe.jpg", "sock.png", "zero.jpg")]


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_special_files_are_not_regular_files_found_without_waiting(tmp_path):
    import threading

    from kosmos_cli.inputs import locations
    from kosmos_cli.inputs.images import NOT_REGULAR, display_size, is_special

    sock, paths = _special_files(tmp_path)
    got: dict = {}

    def look():  # on a thread: before the fix, the FIFO's open waited for a writer forever
        for path in paths:
            try:
                locations.read_bytes(path)
            except locations.Unreadable as exc:
                bytes_error = str(exc)
            got[path] = (load_image(path).error, display_size(path), bytes_error, is_special(path))

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    thread.join(10)
    sock.close()
    assert not thread.is_alive(), "a special file was opened the blocking way"
    assert got == dict.fromkeys(paths, (NOT_REGULAR, None, NOT_REGULAR, True))
    assert not is_special(str(tmp_path)) and not is_special(str(tmp_path / "missing.jpg"))


def test_a_folder_is_not_an_image(tmp_path):
    assert load_image(str(tmp_path)).error == "is a directory, not an image"
