"""Schedules, forward process, posterior and samplers against closed-form answers."""
import math

import pytest
import torch

from ddpt import DDPT, Denoiser, check_meta, load_checkpoint, save_checkpoint
from diffusion import Diffusion, make_betas


@pytest.mark.parametrize("schedule", ["linear", "cosine", "sqrt"])
def test_schedule_shape(schedule):
    dif = Diffusion(1000, schedule)
    b = dif.f64["betas"][1:]
    assert (b > 0).all() and (b < 1).all()
    assert (dif.f64["abar"][1:] < dif.f64["abar"][:-1]).all()
    assert torch.allclose(dif.f64["abar"][1:], torch.cumprod(1 - b, 0))


def test_schedule_closed_forms():
    T = 2000
    lin = make_betas("linear", T)
    assert lin[0].item() == pytest.approx(5e-5) and lin[-1].item() == pytest.approx(0.01)
    assert lin[999].item() == pytest.approx(5e-5 + 999 / 1999 * (0.01 - 5e-5))
    assert 1e-5 < Diffusion(T).f64["abar"][T].item() < 1e-4
    for t in (1, 10, 500, 1500):
        cos = Diffusion(T, "cosine").f64["abar"][t].item()
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        assert cos == pytest.approx(f(t / T) / f(0), rel=1e-9)
        sq = Diffusion(T, "sqrt").f64["abar"][t].item()
        g = lambda u: 1 - math.sqrt(u + 1e-4)
        assert sq == pytest.approx(g(t / T) / g(0), rel=1e-9)
    assert make_betas("sqrt", T)[-1].item() == 0.999  # abar(1) < 0: the last beta is clipped
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_betas("quadratic", 10)


def test_forward_moments():
    dif, N = Diffusion(1000), 200_000
    x0 = torch.tensor([1.5, -2.0])
    for t in (1, 300, 999):
        x_t = dif.q_sample(x0.expand(N, 2), torch.full((N,), t), torch.randn(N, 2))
        mean, var = dif.f64["sqrt_abar"][t].item() * x0, 1 - dif.f64["abar"][t].item()
        # standard error of the mean is sqrt(var/N); of the variance var*sqrt(2/N): allow 5 of each
        assert torch.allclose(x_t.mean(0), mean, atol=5 * math.sqrt(var / N) + 1e-6)
        assert torch.allclose(x_t.var(0), torch.tensor(var), rtol=5 * math.sqrt(2 / N) + 1e-6)


def test_posterior_closed_form():
    dif = Diffusion(100, "cosine")
    x0, x_t = torch.randn(5, 3), torch.randn(5, 3)
    t = torch.tensor([1, 2, 40, 77, 100])
    mean, var = dif.posterior(x0, x_t, t)
    for i, ti in enumerate(t.tolist()):
        b, ab, abp = (dif.f64[k][ti].item() for k in ("betas", "abar", "abar"))
        abp = dif.f64["abar"][ti - 1].item()
        want_mean = (math.sqrt(abp) * b / (1 - ab)) * x0[i] + (math.sqrt(1 - b) * (1 - abp) / (1 - ab)) * x_t[i]
        assert torch.allclose(mean[i], want_mean, atol=1e-6)
        assert var[i].item() == pytest.approx((1 - abp) / (1 - ab) * b, rel=1e-5, abs=1e-12)
    assert var[0].item() == 0 and torch.allclose(mean[0], x0[0])  # t = 1 lands on x0


def gaussian_oracle(dif, mu, sigma):
    """E[x0 | x_t] for x0 ~ N(mu, sigma^2 I): mu + a sigma^2 / (a^2 sigma^2 + 1 - abar) (x_t - a mu)."""
    def denoise(x_t, t):
        a, ab = dif.sqrt_abar[t][:, None], dif.abar[t][:, None]
        return mu + a * sigma ** 2 / (ab * sigma ** 2 + 1 - ab) * (x_t - a * mu)
    return denoise


def test_ddpm_and_ddim_sample_the_gaussian():
    dif, N = Diffusion(1000), 4000
    mu, sigma = torch.tensor([2.0, -1.0, 0.5, 0.0]), 0.5
    g = torch.Generator().manual_seed(0)
    x = dif.sample(gaussian_oracle(dif, mu, sigma), torch.randn(N, 4, generator=g), generator=g)
    assert torch.allclose(x.mean(0), mu, atol=5 * sigma / math.sqrt(N))
    assert torch.allclose(x.var(0), torch.full((4,), sigma ** 2), rtol=0.1)
    y = dif.sample(gaussian_oracle(dif, mu, sigma), torch.randn(N, 4, generator=g), steps=50, eta=0.0)
    assert torch.allclose(y.mean(0), mu, atol=5 * sigma / math.sqrt(N))


def test_point_mass_and_repeatability():
    dif, p = Diffusion(200), torch.tensor([0.3, -0.7])
    oracle = lambda x_t, t: p.expand_as(x_t)
    for steps, eta in ((None, None), (20, 0.0), (20, 1.0)):
        x = dif.sample(oracle, torch.randn(7, 2), steps=steps, eta=eta)
        assert torch.allclose(x, p.expand(7, 2), atol=1e-3)
    den = lambda x_t, t: 0.9 * x_t + 0.1 * torch.tanh(x_t)
    run = lambda seed, **kw: dif.sample(den, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)),
                                        generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    assert torch.equal(run(1, steps=10, eta=0.0), run(2, steps=10, eta=0.0))  # DDIM eta=0: f(x_T) only
    x, path = dif.sample(den, torch.randn(3, 2), steps=10, eta=0.0, trajectory=True)
    assert len(path) == 11 and torch.equal(path[-1], x)


def test_denoiser_init_and_gradient_flow():
    torch.manual_seed(0)
    C = torch.randn(3, 8)
    model = DDPT(C, s=0.5, T=50, r=16, blocks=2)
    ctx = model.training_contexts(4)
    assert ctx.shape == (4, 3, 8) and torch.equal(ctx, C.expand(4, 3, 8))  # untrained DDPT = manual prompt
    assert torch.equal(model.sample(2)[0], C.expand(2, 3, 8))
    before = {k: v.clone() for k, v in model.denoiser.named_parameters()}
    opt = torch.optim.Adam(model.denoiser.parameters(), lr=1e-2)
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


def trained_ddpt(D_split=(4, 6), r=8, T=100):
    torch.manual_seed(1)
    model = DDPT(torch.randn(*D_split), s=1.0, T=T, r=r, blocks=2)
    for p in model.denoiser.parameters():  # a non-trivial, t-dependent denoiser
        torch.nn.init.normal_(p, std=0.3)
    return model


def test_fast_sampler_is_exact():
    model = trained_ddpt()
    # DDIM eta = 0 is a function of x_T: the r-dim chain must reproduce the D-dim one
    fast = model.sample(5, steps=25, eta=0.0, generator=torch.Generator().manual_seed(3))[1]
    slow = model.sample(5, steps=25, eta=0.0, generator=torch.Generator().manual_seed(3), fast=False)[1]
    assert torch.allclose(fast, slow, atol=1e-4)
    # DDPM draws other noise in r dims: compare the two sample distributions
    N = 3000
    fast = model.sample(N, generator=torch.Generator().manual_seed(4))[1]
    slow = model.sample(N, generator=torch.Generator().manual_seed(5), fast=False)[1]
    sd = slow.std(0).clamp(min=1e-3)
    assert ((fast.mean(0) - slow.mean(0)).abs() / sd).max() < 6 / math.sqrt(N) * math.sqrt(2) + 0.02
    assert torch.allclose(fast.std(0), slow.std(0), rtol=0.1, atol=1e-3)
    # and the noise does reach the samples
    assert slow.std(0).max() > 1e-2


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    model = trained_ddpt()
    path = str(tmp_path / "ddpt.pt")
    save_checkpoint(model.checkpoint(model="tiny"), path)
    other = DDPT(model.C, s=1.0, T=100, r=8)
    other.load_checkpoint(load_checkpoint(path))
    g = lambda: torch.Generator().manual_seed(0)
    assert torch.equal(other.sample(2, generator=g())[0], model.sample(2, generator=g())[0])
    with pytest.raises(ValueError, match="d=6 but this run has d=5"):
        DDPT(torch.randn(4, 5), s=1.0, T=100, r=8).load_checkpoint(load_checkpoint(path))
    with pytest.raises(ValueError, match="schedule=linear but this run has schedule=cosine"):
        DDPT(model.C, s=1.0, T=100, schedule="cosine", r=8).load_checkpoint(load_checkpoint(path))
    with pytest.raises(ValueError, match="expected 'soft'"):
        check_meta(load_checkpoint(path), "soft", {})
    assert not (tmp_path / "ddpt.pt.tmp").exists()


def test_denoiser_shapes():
    den = Denoiser(20, r=8, blocks=1)
    assert den(torch.randn(3, 20), torch.tensor([1, 5, 9])).shape == (3, 20)
