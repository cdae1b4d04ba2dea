"""The DDPT denoiser and the prompt it produces (Li, Hyun and Babar, CAIN 2025).

A prompt context is the manual context plus a scaled direction:

    context = C + s * x0          C = E[c] (n, d), s = RMS of the embedding table E

DDPT learns x0 with a diffusion model over D = n*d dimensions. Its denoiser predicts the
clean direction from a noisy one:

    x0_hat(x_t, t) = W_out( blocks( W_in flatten(x_t) + b_in + MLP(sinusoidal(t)) ) ) + b_out

W_in: D -> r (r = 512, the low "intrinsic" dimension), W_out: r -> D, zero-initialised, so an
untrained DDPT returns x0_hat = 0: exactly the manual prompt. Knows nothing of data files.
"""
import os
import pickle

import torch
from torch import nn

from diffusion import Diffusion, timestep_embedding


class Block(nn.Module):
    """Pre-norm residual MLP in r dims: h + W2 silu(W1 LN(h))."""

    def __init__(self, r):
        super().__init__()
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(r), nn.Linear(r, 2 * r), nn.Linear(2 * r, r)

    def forward(self, h):
        return h + self.fc2(nn.functional.silu(self.fc1(self.ln(h))))


class Denoiser(nn.Module):
    def __init__(self, D, r=512, blocks=2, t_dim=128):
        super().__init__()
        self.t_dim = t_dim
        self.inp = nn.Linear(D, r)
        self.t_mlp = nn.Sequential(nn.Linear(t_dim, r), nn.SiLU(), nn.Linear(r, r))
        self.blocks = nn.ModuleList(Block(r) for _ in range(blocks))
        self.out = nn.Linear(r, D)
        nn.init.zeros_(self.out.weight)  # x0_hat = 0 at init: DDPT starts as the manual prompt
        nn.init.zeros_(self.out.bias)

    def time(self, t):
        return self.t_mlp(timestep_embedding(t, self.t_dim))

    def hidden(self, h, temb):
        h = h + temb
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x_t, t):
        """x_t (B, D), t (B,) -> x0_hat (B, D)."""
        return self.out(self.hidden(self.inp(x_t), self.time(t)))


class DDPT(nn.Module):
    def __init__(self, C, s, T=2000, schedule="linear", r=512, blocks=2, x0="self"):
        super().__init__()
        if x0 not in ("self", "zero"):
            raise ValueError(f"unknown --x0 {x0!r}: use self or zero")
        self.register_buffer("C", C.detach().float().clone())
        self.s, self.x0_mode = float(s), x0
        self.n, self.d = C.shape
        self.D = self.n * self.d
        self.diffusion = Diffusion(T, schedule)
        self.denoiser = Denoiser(self.D, r, blocks)
        self.meta = dict(n=self.n, d=self.d, T=T, schedule=schedule, r=r, blocks=blocks)

    def prompt(self, x0):
        """context = C + s * x0, for a batch of flat directions x0 (B, D) -> (B, n, d)."""
        return self.C + self.s * x0.view(-1, self.n, self.d)

    def _randn(self, *shape, generator=None):
        # drawn on the CPU, so one seed gives the same noise on any device
        return torch.randn(*shape, generator=generator).to(self.C.device)

    def training_contexts(self, B, generator=None):
        """Half of a training step (the paper's Eq. 3 without the LLM): B prompt contexts.

        t ~ U{1..T}, eps ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, context =
        C + s * x0_hat(x_t, t), with gradients into the denoiser. x0 is the manual prompt
        (`zero`, as in the paper) or the model's own current estimate, one denoiser call from
        pure noise, without gradient (`self`): what the sampler feeds it at small t.
        """
        t = torch.randint(1, self.diffusion.T + 1, (B,), generator=generator).to(self.C.device)
        eps = self._randn(B, self.D, generator=generator)
        if self.x0_mode == "zero":
            x0 = torch.zeros_like(eps)
        else:
            with torch.no_grad():
                t_T = torch.full_like(t, self.diffusion.T)
                x0 = self.denoiser(self._randn(B, self.D, generator=generator), t_T)
        x_t = self.diffusion.q_sample(x0, t, eps)
        return self.prompt(self.denoiser(x_t, t))

    @torch.inference_mode()
    def sample(self, B, steps=None, eta=None, generator=None, fast=True):
        """B prompt contexts from noise: DDPM over all T steps (steps=None) or DDIM over K steps.

        Returns (contexts (B, n, d), directions x0 (B, D)). fast=True runs the same chain in
        r dimensions instead of D: every step is linear in (x0_hat, x_t, z), and the denoiser
        reads x_t only through u = W_in x_t, so u obeys
            u_{t-1} = a (M h_t + m) + b u_t + c W_in z,   M = W_in W_out, m = W_in b_out,
        where W_in z ~ N(0, W_in W_in^T) is drawn as L xi, L L^T = W_in W_in^T, xi ~ N(0, I_r).
        Only the last step, whose x0_hat is the sample, goes back to D dims. Same distribution
        of samples (and the same DDIM eta = 0 map from x_T), about D/r times fewer flops a step.
        """
        den, dif = self.denoiser, self.diffusion
        x_T = self._randn(B, self.D, generator=generator)
        if not fast:
            x0 = dif.sample(den, x_T, steps, eta, generator)
            return self.prompt(x0), x0
        W_in, b_in = den.inp.weight, den.inp.bias
        M, m = W_in @ den.out.weight, W_in @ den.out.bias
        temb = den.time(torch.arange(dif.T + 1, device=x_T.device))  # once per run, not per step
        L = []  # factor of W_in W_in^T, made on the first noisy step (DDIM with eta = 0 needs none)

        def inner(u, t):
            return den.hidden(u + b_in, temb[t]) @ M.T + m

        def last(u, t):
            return den.out(den.hidden(u + b_in, temb[t]))

        def noise(u):
            if not L:
                evals, V = torch.linalg.eigh(W_in.double() @ W_in.double().T)
                L.append((V * evals.clamp(min=0).sqrt()).to(W_in.dtype))
            return self._randn(*u.shape, generator=generator) @ L[0].T

        x0 = dif.sample(inner, x_T @ W_in.T, steps, eta, generator, noise=noise, last=last)
        return self.prompt(x0), x0

    def checkpoint(self, **extra):
        """What a DDPT checkpoint holds: denoiser weights and the shapes to check at load."""
        return {"kind": "ddpt", "meta": {**self.meta, "x0": self.x0_mode, **extra},
                "weights": self.denoiser.state_dict()}

    def load_checkpoint(self, ckpt):
        check_meta(ckpt, "ddpt", self.meta)
        self.denoiser.load_state_dict(ckpt["weights"])


def check_meta(ckpt, kind, expected):
    """A checkpoint must meet the same kind, LLM width d, context length n and schedule."""
    if ckpt.get("kind") != kind:
        raise ValueError(f"checkpoint holds a {ckpt.get('kind')!r} model, expected {kind!r}")
    for key, want in expected.items():
        got = ckpt["meta"].get(key)
        if got != want:
            raise ValueError(f"checkpoint has {key}={got} but this run has {key}={want}: "
                             f"use the same --model/--n/--T/--schedule as in training")


def save_checkpoint(obj, path):
    """Atomic: write a temporary file beside the target, then rename over it. If the write fails
    (a full disk, Ctrl-C), the temporary file goes and the previous checkpoint stays as it was."""
    tmp = f"{path}.tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise OSError(f"could not write {path} ({e.strerror or e}): the previous checkpoint is kept; "
                          "free space (or fix the folder) and rerun with --resume") from None
        raise


def load_checkpoint(path):
    """Loads tensors, numbers and strings only: no arbitrary object is unpickled."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train one first with train.py")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path} is damaged ({str(e).splitlines()[0][:80]}): re-train it, "
                         "or restore it from a copy") from None
