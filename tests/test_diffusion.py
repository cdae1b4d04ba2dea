"""diffusion.py: schedules, forward process, posterior steps and samplers against closed-form answers."""
import math

import pytest
import torch

from diffusion import Diffusion, make_betas


@pytest.mark.parametrize("schedule", ["linear", "cosine", "sqrt"])
def test_schedule_shape(schedule):
    dif = Diffusion(1000, schedule)
    b = dif.betas[1:]
    assert (b > 0).all() and (b < 1).all()
    assert (dif.abar[1:] < dif.abar[:-1]).all()
    assert torch.allclose(dif.abar[1:], torch.cumprod(1 - b, 0))


def test_schedule_closed_forms():
    T = 2000
    lin = make_betas("linear", T)
    assert lin[0].item() == pytest.approx(5e-5) and lin[-1].item() == pytest.approx(0.01)
    assert lin[999].item() == pytest.approx(5e-5 + 999 / 1999 * (0.01 - 5e-5))
    assert 1e-5 < Diffusion(T).abar[T].item() < 1e-4
    for t in (1, 10, 500, 1500):
        cos = Diffusion(T, "cosine").abar[t].item()
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        assert cos == pytest.approx(f(t / T) / f(0), rel=1e-9)
        sq = Diffusion(T, "sqrt").abar[t].item()
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
        mean, var = dif.sqrt_abar[t].item() * x0, 1 - dif.abar[t].item()
        # standard error of the mean is sqrt(var/N); of the variance var*sqrt(2/N): allow 5 of each
        assert torch.allclose(x_t.mean(0), mean, atol=5 * math.sqrt(var / N) + 1e-6)
        assert torch.allclose(x_t.var(0), torch.tensor(var), rtol=5 * math.sqrt(2 / N) + 1e-6)


def test_ddpm_step_is_the_closed_form_posterior():
    """Each DDPM step x_{t-1} = a x0_hat + b x_t + c z has a, b = the posterior mean's weights and
    c^2 = its variance (Ho et al. 2020, eq. 7), from the betas alone."""
    dif = Diffusion(100, "cosine")
    pairs = dif.timesteps()
    for (t, s), (a, b, c) in zip(pairs, dif.step_coefficients(pairs)):
        beta, ab = dif.betas[t].item(), math.prod(1 - dif.betas[i].item() for i in range(1, t + 1))
        abp = ab / (1 - beta)
        assert s == t - 1 and a == pytest.approx(math.sqrt(abp) * beta / (1 - ab), rel=1e-9)
        assert b == pytest.approx(math.sqrt(1 - beta) * (1 - abp) / (1 - ab), rel=1e-9, abs=1e-15)
        assert c ** 2 == pytest.approx((1 - abp) / (1 - ab) * beta, rel=1e-9, abs=1e-15)
    assert pairs[-1] == (1, 0) and dif.step_coefficients(pairs[-1:]) == [(1.0, 0.0, 0.0)]  # t = 1 lands on x0
    with pytest.raises(ValueError, match="DDPM sampler needs all T steps"):
        dif.step_coefficients(dif.timesteps(10))


def test_eps_and_x0_conversions_invert_the_forward_process():
    dif = Diffusion(1000, "sqrt")
    x0, eps, t = torch.randn(6, 3, 4), torch.randn(6, 3, 4), torch.tensor([1, 2, 100, 500, 900, 1000])
    x_t = dif.q_sample(x0, t, eps)
    assert torch.allclose(dif.eps_from_x0(x_t, t, x0), eps, atol=1e-4)
    # 1/sqrt(abar_t) magnifies float error near t = T: check where it is tame
    assert torch.allclose(dif.x0_from_eps(x_t[:4], t[:4], eps[:4]), x0[:4], atol=1e-3)


def gaussian_oracle(dif, mu, sigma):
    """E[x0 | x_t] for x0 ~ N(mu, sigma^2 I): mu + a sigma^2 / (a^2 sigma^2 + 1 - abar) (x_t - a mu)."""
    def denoise(x_t, t):
        a, ab = dif.sqrt_abar[t][:, None].float(), dif.abar[t][:, None].float()
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
    for steps, eta in ((None, 0.0), (20, 0.0), (20, 1.0)):
        x = dif.sample(oracle, torch.randn(7, 2), steps=steps, eta=eta)
        assert torch.allclose(x, p.expand(7, 2), atol=1e-3)
    den = lambda x_t, t: 0.9 * x_t + 0.1 * torch.tanh(x_t)
    run = lambda seed, **kw: dif.sample(den, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)),
                                        generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    assert torch.equal(run(1, steps=10, eta=0.0), run(2, steps=10, eta=0.0))  # DDIM eta=0: f(x_T) only
    x_T = torch.randn(3, 2)
    path = list(dif.trajectory(den, x_T, steps=10))
    assert [s for s, _ in path] == [200, 180, 160, 140, 120, 100, 80, 60, 40, 20, 0]
    assert torch.equal(path[-1][1], dif.sample(den, x_T, steps=10))
    with pytest.raises(ValueError, match="--sample-steps must be between 1 and T = 200"):
        dif.sample(den, x_T, steps=201)
