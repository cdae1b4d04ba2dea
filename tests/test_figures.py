"""tools/figures.py on a run of seconds: every figure written, with pixels that vary; the chain it
draws ends at the very prompts sample.py draws."""
import os

import matplotlib.image
import pytest
import torch

import train
from prompts import METHODS
from tools import figures


def test_the_chain_ends_at_the_prompts_sample_draws(cache, tmp_path):
    train.main(["--out", str(tmp_path / "run"), "--T", "50", "--r", "16", "--batch-size", "4", "--steps", "2",
                "--eval-every", "2", "--method", "ddpt", "ddpt-mcl", "--K", "2", "--chain", "4"])
    _, modules = figures.load_run(tmp_path / "run")
    for name, steps in (("ddpt", 50), ("ddpt-mcl", 4)):
        module = modules["seed0"][name]
        walk = figures.chain(module, 3, seed=5, keep=1000)
        assert [t for t, _ in walk] == sorted({t for t, _ in walk}, reverse=True) and len(walk) == steps
        drawn = module.sample(3, generator=torch.Generator().manual_seed(5), fast=False)
        assert torch.allclose(module.prompt(walk[-1][1]), drawn)
        assert len(figures.chain(module, 3, seed=5, keep=3)) in (3, 4)  # thinned, the last step kept
    assert set(modules["seed0"]) == {"ddpt", "ddpt-mcl"} and METHODS["ddpt-mcl"].stochastic


def test_every_figure_is_drawn(cache, tmp_path, capsys):
    train.main(["--out", str(tmp_path / "run"), "--T", "50", "--r", "16", "--batch-size", "4", "--steps", "4",
                "--eval-every", "2", "--method", "ddpt", "prompt-tuning", "ddpt-mcl", "--K", "2", "--chain", "4",
                "--seed", "0", "1"])
    capsys.readouterr()
    with pytest.raises(SystemExit, match="no run folder"):
        figures.main([str(tmp_path / "nowhere")])
    figures.main([str(tmp_path / "run"), "--out", str(tmp_path / "figures"), "--k", "3"])
    printed = capsys.readouterr().out
    for name in ("emerging.png", "prompts.png", "curves.png", "glance.png"):
        path = tmp_path / "figures" / name
        assert os.path.getsize(path) > 20_000 and f"docs/figures/{name}" in printed
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.std() > 0.05  # not a blank canvas
    assert not [f for f in os.listdir(tmp_path / "figures") if f.startswith(".")]  # no half-written file left


def test_glance_alone_needs_no_run(tmp_path, capsys):
    figures.main(["--glance", "--out", str(tmp_path)])
    assert os.listdir(tmp_path) == ["glance.png"] and "docs/figures/glance.png" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        figures.main([])  # neither a run nor --glance
