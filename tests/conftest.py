"""Shared fixtures: the tiny model pre-trained once per test session, in a cache of its own."""
import os

import pytest

import data
from models import tiny


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A cache of the session's own (subprocesses find it through DDPT_CACHE); `tiny` is the shipped
    model (models/tiny-demo), which every machine fine-tunes, tests included."""
    folder = tmp_path_factory.mktemp("cache")
    old = data.CACHE
    data.CACHE = str(folder)
    assert os.path.exists(os.path.join(tiny.SHIPPED, "model.safetensors")), "the shipped tiny model is missing"
    yield folder
    data.CACHE = old


SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture
def shared():
    """shared(path, fallback=False): see `shared_path`."""
    return shared_path


def shared_path(path, fallback=False):
    """A path under ../shared/data (the project's public data copies). Where that folder is absent (a
    fork, say): the small cut under tests/fixtures when `fallback`, else the test is skipped."""
    full = os.path.join(SHARED, path)
    if os.path.exists(full):
        return full
    if fallback:
        return os.path.join(FIXTURES, path)
    pytest.skip(f"needs ../shared/data/{path} (full public data, absent here); tests/fixtures has only small cuts")
