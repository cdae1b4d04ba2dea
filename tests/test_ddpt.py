"""ddpt.py: the denoiser, DDPT's contexts, its exact r-dim sampler, rebuilding from a checkpoint."""
import math

import pytest
import torch

import checkpoint
from ddpt import DDPT, Denoiser


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
    assert not (tmp_path / "ddpt.pt.tmp").exists()


def test_denoiser_shapes():
    den = Denoiser(20, r=8, blocks=1)
    assert den(torch.randn(3, 20), torch.tensor([1, 5, 9])).shape == (3, 20)
