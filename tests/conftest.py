"""Fixtures only; what tests share otherwise is in tests/helpers (`from tests.helpers import ...`)."""

import os

import pytest

from tests.helpers import SHAPES_MODEL, make_images

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random 2-layer Kosmos-2 checkpoint folder."""
    from tests.helpers import build_tiny

    return build_tiny(str(tmp_path_factory.mktemp("tiny-kosmos2")))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    from kosmos_cli import load_engine

    return load_engine(tiny_model, max_new_tokens=12)


@pytest.fixture(scope="session")
def shapes_model():
    """The committed toy checkpoint that really grounds (tools/train_toy_model.py made it)."""
    assert os.path.exists(os.path.join(SHAPES_MODEL, "config.json")), "tests/fixtures/kosmos2-shapes is missing"
    return SHAPES_MODEL


@pytest.fixture(scope="session")
def shapes_engine(shapes_model):
    from kosmos_cli import load_engine

    return load_engine(shapes_model, max_new_tokens=48)


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "photos"
    make_images(str(folder))
    return folder


@pytest.fixture(autouse=True)
def _fresh_logger():
    """The CLI sets up the `kosmos_cli` logger for a terminal (level, handler); each test starts from a plain one."""
    import logging

    yield
    logger = logging.getLogger("kosmos_cli")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
