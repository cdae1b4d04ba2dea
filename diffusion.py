"""Gaussian diffusion in plain PyTorch: schedules, forward process, DDPM and DDIM samplers.

Knows nothing of LLMs. Timesteps run t = 1..T; every table below is indexed by t and has
an entry for t = 0 (abar_0 = 1, the clean data), so x_0 needs no special case.

    forward      q(x_t | x_0)      = N(sqrt(abar_t) x_0, (1 - abar_t) I),  abar_t = prod_{i<=t} (1 - beta_i)
    posterior    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, var_t)          (Ho et al. 2020, eq. 6-7)
                 c0_t  = sqrt(abar_{t-1}) beta_t / (1 - abar_t)
                 ct_t  = sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t)
                 var_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
    DDIM         x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z   (Song et al. 2021, eq. 12)
                 eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
                 sigma   = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)

The denoiser is any callable (x_t, t) -> x0_hat: it predicts the clean sample.
"""
import argparse
import math

import torch


def _betas_from_abar(f, T, max_beta=0.999):
    """beta_t = 1 - f(t/T) / f((t-1)/T), clipped (Nichol & Dhariwal's `betas_for_alpha_bar`)."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    abar = f(t)
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(schedule, T):
    """beta_1..beta_T (float64) for `linear`, `cosine` or `sqrt`."""
    if schedule == "linear":
        # Nichol & Dhariwal scale Ho et al.'s 1e-4 -> 0.02 (meant for T = 1000) to any T,
        # so abar_T stays ~4e-5 instead of reaching ~0 halfway through a longer chain.
        scale = 1000 / T
        return torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64)
    if schedule == "cosine":  # Nichol & Dhariwal 2021, offset s = 0.008
        return _betas_from_abar(lambda t: torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2, T)
    if schedule == "sqrt":  # Diffusion-LM / CodeFusion: abar(t) = 1 - sqrt(t/T + 1e-4)
        return _betas_from_abar(lambda t: 1 - torch.sqrt(t + 1e-4), T)
    raise ValueError(f"unknown noise schedule {schedule!r}: use linear, cosine or sqrt")


def timestep_embedding(t, dim):
    """Sinusoidal embedding of integer timesteps t (B,) -> (B, dim), as in the Transformer/DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def steps_arg(text):
    """The one sampler option of every script, `--sample-steps`: K (DDIM over K steps) or `all`
    (DDPM over all T steps, returned as None), the convention `Diffusion.trajectory` reads."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of DDIM steps (at least 1) or 'all' for DDPM, got {text!r}")
    return int(text)


class Diffusion:
    """The schedule and every quantity derived from it, indexed by t = 0..T, computed and kept in
    float64 (each table is cast to the caller's dtype where it is used)."""

    def __init__(self, T=2000, schedule="linear"):
        self.T = T
        betas = make_betas(schedule, T)
        abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        one_minus = (1 - abar).clamp(min=1e-20)  # only t = 0 hits the clamp, and t = 0 is never a step
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # beta_0 = 0: index = t
        self.abar = abar
        self.sqrt_abar = abar.sqrt()
        self.sqrt_1m_abar = (1 - abar).sqrt()
        self.post_c0 = abar_prev.sqrt() * self.betas / one_minus
        self.post_ct = (1 - self.betas).sqrt() * (1 - abar_prev) / one_minus
        self.post_var = self.betas * (1 - abar_prev) / one_minus

    def _at(self, table, t, x):
        """table[t] in x's dtype, shaped to broadcast over x (B, ...)."""
        return table.to(x.device, x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0, t, eps):
        """Forward process: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, one t per batch row."""
        return self._at(self.sqrt_abar, t, x0) * x0 + self._at(self.sqrt_1m_abar, t, x0) * eps

    def eps_from_x0(self, x_t, t, x0_hat):
        """The noise an x0 prediction implies: eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)."""
        return (x_t - self._at(self.sqrt_abar, t, x_t) * x0_hat) / self._at(self.sqrt_1m_abar, t, x_t)

    def x0_from_eps(self, x_t, t, eps_hat):
        """The clean sample a noise prediction implies: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)."""
        return (x_t - self._at(self.sqrt_1m_abar, t, x_t) * eps_hat) / self._at(self.sqrt_abar, t, x_t)

    def timesteps(self, steps=None):
        """The (t, s) pairs a sampler walks: all T steps (DDPM), or K evenly spaced ones (DDIM); s = 0 last."""
        K = self.T if steps is None else steps
        if not 1 <= K <= self.T:
            raise ValueError(f"--sample-steps must be between 1 and T = {self.T}, got {K}")
        ts = torch.linspace(self.T, 0, K + 1, dtype=torch.float64).round().long().tolist()
        return list(zip(ts[:-1], ts[1:]))

    def step_coefficients(self, pairs, eta=None):
        """For each (t, s): x_s = a x0_hat + b x_t + c z, precomputed once per run as plain floats.

        eta = None gives the DDPM posterior (a, b, c) = (c0_t, ct_t, sqrt(var_t)), which needs
        s = t - 1; a number gives DDIM with that eta. Both are linear in (x0_hat, x_t, z), which is
        what lets a caller run the loop in a projected space (ddpt.Denoiser.sample_in_r).
        """
        coefs = []
        for t, s in pairs:
            if eta is None:
                if s != t - 1:
                    raise ValueError("the DDPM sampler needs all T steps; use DDIM for fewer")
                coefs.append((self.post_c0[t].item(), self.post_ct[t].item(), self.post_var[t].sqrt().item()))
                continue
            ab_t, ab_s = self.abar[t], self.abar[s]
            sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()
            k = (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() / (1 - ab_t).sqrt()  # weight of eps_hat
            # x_s = sqrt(ab_s) x0 + k (x_t - sqrt(ab_t) x0) + sigma z
            coefs.append(((ab_s.sqrt() - k * ab_t.sqrt()).item(), k.item(), sigma.item()))
        return coefs

    def trajectory(self, denoiser, x_T, steps=None, eta=0.0, generator=None):
        """The reverse process: (T, x_T), then one (s, x_s) per step, ending at (0, x_0).

        The one place where the sampler is decided: steps=None runs DDPM, ancestral sampling over
        all T steps from the posterior q(x_{t-1} | x_t, x0_hat) (eta is not used); steps=K runs DDIM
        over K evenly spaced steps with that eta (0: deterministic). Each step's fresh Gaussian is
        drawn from `generator` on the CPU, so one seed gives the same chain on any device. At s = 0
        both samplers return x0_hat exactly (abar_0 = 1): the last denoiser output *is* the sample.
        """
        pairs = self.timesteps(steps)
        coefs = self.step_coefficients(pairs, None if steps is None else eta)
        x, B = x_T, x_T.shape[0]
        yield self.T, x
        for (t, s), (a, b, c) in zip(pairs, coefs):
            x0_hat = denoiser(x, torch.full((B,), t, dtype=torch.long, device=x.device))
            if s == 0:
                x = x0_hat
            else:
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if c > 0 else 0
                x = a * x0_hat + b * x + c * z
            yield s, x

    def sample(self, denoiser, x_T, steps=None, eta=0.0, generator=None):
        """x_0, the end of `trajectory` (same arguments): DDPM over all T (steps=None) or DDIM-K."""
        for _, x in self.trajectory(denoiser, x_T, steps=steps, eta=eta, generator=generator):
            pass
        return x
