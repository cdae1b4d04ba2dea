"""Shared fixtures: the tiny model pre-trained once per test session, in a cache of its own."""
import pytest

import data
import llm


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A tiny model pre-trained for 1500 steps (the default is 3000; 800 left the vague prompt too
    close), in a cache of its own; subprocesses find it through DDPT_CACHE."""
    folder = tmp_path_factory.mktemp("cache")
    old = data.CACHE
    data.CACHE = str(folder)
    llm.pretrain_tiny(llm.tiny_path("demo"), "demo", steps=1500)
    yield folder
    data.CACHE = old
