"""ddpt.py: the denoiser, DDPT's contexts, its exact r-dim sampler, rebuilding from a checkpoint, and
another denoiser swapped in by a subclass alone (the README's forking recipe)."""
import json
import math
import os

import pytest
import torch
from torch import nn

from runtime import checkpoint
import prompts
import sample
import train
from ddpt import DDPT, Denoiser
from diffusion import timestep_embedding


def test_denoiser_init_and_gradient_flow():
    torch.manual_seed(0)
    C = torch.randn(3, 8)
    model = DDPT(C, s=0.5, T=50, r=16, blocks=2)
    ctx = model.training_contexts(4)
    assert ctx.shape == (4, 3, 8) and torch.equal(ctx, C.expand(4, 3, 8))  # untrained DDPT = manual prompt
    assert torch.equal(model.sample(2), C.expand(2, 3, 8))
    before = {k: v.clone() for k, v in model.denoiser.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    target = torch.randn(3, 8)

    def step():
        opt.zero_grad()
        ((model.training_contexts(4) - target) ** 2).sum().backward()
        opt.step()
    step()  # the zero W_out passes no gradient back on the first step: only the output layer moves
    changed = {k for k, v in model.denoiser.named_parameters() if not torch.equal(v, before[k])}
    assert changed == {"out.weight", "out.bias"}
    for _ in range(3):
        step()
    assert all(not torch.equal(v, before[k]) for k, v in model.denoiser.named_parameters())
    assert torch.equal(model.C, C)  # the manual context is a buffer: never trained


def trained_ddpt(D_split=(4, 6), r=8, T=100):
    torch.manual_seed(1)
    model = DDPT(torch.randn(*D_split), s=1.0, T=T, r=r, blocks=2)
    for p in model.denoiser.parameters():  # a non-trivial, t-dependent denoiser
        torch.nn.init.normal_(p, std=0.3)
    return model


def test_fast_sampler_is_exact():
    model = trained_ddpt()
    direction = lambda ctx: model.directions(ctx)
    # DDIM eta = 0 is a function of x_T: the r-dim chain must reproduce the D-dim one
    fast = direction(model.sample(5, steps=25, eta=0.0, generator=torch.Generator().manual_seed(3)))
    slow = direction(model.sample(5, steps=25, eta=0.0, generator=torch.Generator().manual_seed(3), fast=False))
    assert torch.allclose(fast, slow, atol=1e-4)
    # DDPM draws other noise in r dims: compare the two sample distributions
    N = 3000
    fast = direction(model.sample(N, generator=torch.Generator().manual_seed(4)))
    slow = direction(model.sample(N, generator=torch.Generator().manual_seed(5), fast=False))
    sd = slow.std(0).clamp(min=1e-3)
    assert ((fast.mean(0) - slow.mean(0)).abs() / sd).max() < 6 / math.sqrt(N) * math.sqrt(2) + 0.02
    assert torch.allclose(fast.std(0), slow.std(0), rtol=0.1, atol=1e-3)
    # and the noise does reach the samples
    assert slow.std(0).max() > 1e-2


def test_rebuilt_from_its_checkpoint_alone(tmp_path):
    model = trained_ddpt()
    path = str(tmp_path / "ddpt.pt")
    checkpoint.save(model.checkpoint(), path)
    ckpt = checkpoint.load(path)
    assert ckpt["config"] == dict(n=4, d=6, s=1.0, T=100, schedule="linear", r=8, blocks=2, x0="self")
    other = DDPT.from_checkpoint(ckpt)
    g = lambda: torch.Generator().manual_seed(0)
    assert torch.equal(other.C, model.C) and torch.equal(other.sample(2, generator=g()), model.sample(2, generator=g()))
    with pytest.raises(ValueError, match="d=6 but this run has d=5"):
        checkpoint.check(ckpt, "ddpt", DDPT(torch.randn(4, 5), s=1.0, T=100, r=8).config())
    with pytest.raises(ValueError, match="schedule=linear but this run has schedule=cosine"):
        checkpoint.check(ckpt, "ddpt", DDPT(model.C, s=1.0, T=100, schedule="cosine", r=8).config())
    with pytest.raises(ValueError, match="expected 'prompt-tuning'"):
        checkpoint.check(ckpt, "prompt-tuning", {})
    assert os.listdir(tmp_path) == ["ddpt.pt"]  # no temporary left beside it


def test_denoiser_shapes():
    den = Denoiser(20, r=8, blocks=1)
    assert den(torch.randn(3, 20), torch.tensor([1, 5, 9])).shape == (3, 20)


class AttentionDenoiser(nn.Module):
    """A fork's denoiser: self-attention over the n context positions (each a token of width d),
    with the timestep added to every position; zero output layer, so it too starts at the manual prompt."""

    def __init__(self, n, d, width=16):
        super().__init__()
        self.n, self.d, self.width = n, d, width
        self.inp, self.out = nn.Linear(d, width), nn.Linear(width, d)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t, t):
        h = self.inp(x_t.view(-1, self.n, self.d)) + timestep_embedding(t, self.width)[:, None].to(x_t)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.out(h).flatten(1)


class AttentionDDPT(DDPT):
    """The README's forking recipe: a subclass whose make_denoiser returns the new network."""
    kind, title = "ddpt-attention", "DDPT, attention denoiser"

    def make_denoiser(self, *, r, blocks):
        return AttentionDenoiser(self.n, self.d, width=r)


def test_a_swapped_denoiser_trains_and_samples_with_no_other_edit(cache, tmp_path, monkeypatch):
    model = AttentionDDPT(torch.randn(3, 8), s=0.5, T=50, r=16)
    assert torch.equal(model.sample(2), model.C.expand(2, 3, 8))  # untrained: the manual prompt
    for p in model.denoiser.parameters():
        nn.init.normal_(p, std=0.3)
    g = lambda: torch.Generator().manual_seed(0)  # no sample_in_r: fast or not, the plain chain
    assert torch.equal(model.sample(2, g(), steps=5), model.sample(2, g(), steps=5, fast=False))

    monkeypatch.setitem(prompts.METHODS, AttentionDDPT.kind, AttentionDDPT)
    out = str(tmp_path / "run")
    train.main(["--out", out, "--method", "ddpt-attention", "--r", "16", "--T", "50", "--steps", "4",
                "--eval-every", "2", "--batch-size", "4", "--lr", "1e-2"])
    ckpt = checkpoint.load(os.path.join(out, "seed0", "ddpt-attention.pt"))
    assert ckpt["config"]["r"] == 16 and ckpt["weights"]["denoiser.out.weight"].abs().sum() > 0
    assert set(ckpt["weights"]) >= {"denoiser.attn.in_proj_weight", "denoiser.inp.weight"}
    sample.main(["--out", out, "--limit", "4", "--k", "2", "--sample-steps", "5"])
    rows = [r["method"] for r in json.load(open(os.path.join(out, "seed0", "results.json")))["rows"]]
    assert "DDPT, attention denoiser (DDIM-5) top-1" in rows
