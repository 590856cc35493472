"""Labels use a Unicode TrueType font when the system has one ($KOSMOS_FONT first), else Pillow's default."""

import logging
import os
import shutil

import pytest
from PIL import Image, ImageDraw

from kosmos_cli.drawing import fonts
from kosmos_cli.drawing import render as drawing


def _system_font():
    """A real TrueType font on this machine, or None (then the tests that need one are skipped)."""
    found = fonts.find_font()
    if found:
        return found
    for top in fonts.FONT_DIRS:
        for folder, _, files in os.walk(os.path.expanduser(top)):
            for name in sorted(files):
                if name.lower().endswith(".ttf"):
                    return os.path.join(folder, name)
    return None


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    for cached in (fonts.font_path, fonts.label_font):
        cached.cache_clear()
    yield
    for cached in (fonts.font_path, fonts.label_font):
        cached.cache_clear()


def _needs_font():
    path = _system_font()
    if path is None:
        pytest.skip("no TrueType font on this machine")
    return path


def test_kosmos_font_names_the_font_labels_are_drawn_in(monkeypatch):
    path = _needs_font()
    monkeypatch.setenv(fonts.FONT_ENV, path)
    assert fonts.label_font(20).path == path
    assert drawing._font(20).path == path  # drawing goes through it


def test_a_known_font_is_found_in_a_font_folder(tmp_path, monkeypatch):
    path = _needs_font()
    (tmp_path / "truetype" / "dejavu").mkdir(parents=True)
    copy = tmp_path / "truetype" / "dejavu" / "DejaVuSans.ttf"
    shutil.copy(path, copy)
    monkeypatch.setattr(fonts, "FONT_DIRS", (str(tmp_path / "nowhere"), str(tmp_path)))
    assert fonts.font_path() == str(copy)
    font = fonts.label_font(24)
    assert font.path == str(copy) and font.size == 24
    image = Image.new("RGB", (200, 40), "white")
    ImageDraw.Draw(image).text((2, 2), "café über 東京", font=font, fill="black")  # draws, whatever it covers


def test_the_font_with_most_scripts_wins(tmp_path):
    for name in ("FreeSans.ttf", "dejavusans.TTF", "NotoSansCJK-Regular.ttc"):
        sub = tmp_path / name.split(".")[0]
        sub.mkdir()
        (sub / name).write_bytes(b"")
    assert fonts.find_font([str(tmp_path)]).endswith("NotoSansCJK-Regular.ttc")
    assert fonts.find_font([str(tmp_path)], ("FreeSans.ttf", "DejaVuSans.ttf")).endswith("FreeSans.ttf")
    assert fonts.find_font([str(tmp_path / "missing")]) is None


def test_kosmos_font_may_be_a_file_name_in_a_font_folder(tmp_path, monkeypatch):
    (tmp_path / "Special.ttf").write_bytes(b"")
    monkeypatch.setattr(fonts, "FONT_DIRS", (str(tmp_path),))
    monkeypatch.setenv(fonts.FONT_ENV, "special.ttf")
    assert fonts.font_path() == str(tmp_path / "Special.ttf")


def test_without_a_unicode_font_labels_use_pillows_default(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fonts, "FONT_DIRS", (str(tmp_path),))
    monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "gone.ttf"))
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        assert fonts.font_path() is None
        font = fonts.label_font(20)
    assert "KOSMOS_FONT" in caplog.text and "no such font file" in caplog.text
    assert not isinstance(getattr(font, "path", None), str)  # Pillow's own, from memory
    ImageDraw.Draw(Image.new("RGB", (100, 30))).text((0, 0), "a red car", font=font)


def test_a_damaged_font_file_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"not a font")
    monkeypatch.setenv(fonts.FONT_ENV, str(bad))
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        font = fonts.label_font(20)
    assert "cannot use the font" in caplog.text
    assert not isinstance(getattr(font, "path", None), str)
