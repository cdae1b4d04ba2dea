"""The DDPT denoiser and the prompt it produces (Li, Hyun and Babar, CAIN 2025).

A prompt context is the manual context plus a scaled direction (prompts.py):

    context = C + s * x0          C = E[c] (n, d), s = RMS of the embedding table E

DDPT learns x0 with a diffusion model over D = n*d dimensions. Its denoiser predicts the
clean direction from a noisy one:

    x0_hat(x_t, t) = W_out( blocks( W_in flatten(x_t) + b_in + MLP(sinusoidal(t)) ) ) + b_out

W_in: D -> r (r = 512, the low "intrinsic" dimension), W_out: r -> D, zero-initialised, so an
untrained DDPT returns x0_hat = 0: exactly the manual prompt. The paper's objective (Eq. 3) is
`objective`, the one function train.py's loop calls for every method. Knows nothing of data files.

DDPT reaches its denoiser only through the call `denoiser(x_t, t, **cond)` -> x0_hat (B, D), the
form of improved-diffusion's `model(x, t, **model_kwargs)` (cond: what a variant conditions on,
nothing for the paper's). To try another network, subclass DDPT and return it from
`make_denoiser` (the README's "Forking"); a denoiser that also offers `sample_in_r` (the MLP here)
gets the fast sampler, any other the plain chain of diffusion.py.
"""
import torch
from torch import nn

import llm
from diffusion import Diffusion, steps_arg, timestep_embedding
from prompts import Option, PromptMethod, count, register


def objective(module, model, batch, *, B, generator, share=slice(None), score=None, features=None):
    """The paper's Eq. 3, the loss DDPT is trained on (no reconstruction term):

        L(theta) = E_{(q, y), t, eps} [ CE( y | [C + s * x0_hat_theta(x_t, t) ; q] ) ],
        t ~ U{1..T},  eps ~ N(0, I),  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps

    the frozen LLM's token cross-entropy of the reference code y given the prompt made from the
    denoiser's output and the instruction q. (Which x0 is noised is DDPT's `--x0`: the paper's is
    `zero`, the manual prompt; see DDPT.training_contexts.) module(B, generator, score, features)
    draws t, eps and returns the B contexts (DDPT.training_contexts; any registered method's, a soft
    prompt's being the context itself); `share` is this process's pairs of the batch (all of them,
    without torchrun). Returns (the summed cross-entropy of the share's code tokens, with gradients
    into the module; the number of those tokens): their quotient is L on this share.
    """
    contexts = module(B, generator, score, features)
    contexts = contexts[share] if contexts.dim() == 3 else contexts  # one context for all, or one per pair
    ce, real = llm.token_losses(model, contexts, batch)
    return ce.sum(), real.sum().item()


class Block(nn.Module):
    """Pre-norm residual MLP in r dims: h + W2 silu(W1 LN(h))."""

    def __init__(self, r):
        super().__init__()
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(r), nn.Linear(r, 2 * r), nn.Linear(2 * r, r)

    def forward(self, h):
        return h + self.fc2(nn.functional.silu(self.fc1(self.ln(h))))


class Denoiser(nn.Module):
    """The paper's MLP denoiser: x0_hat = W_out g + b_out, g = hidden(W_in x_t + b_in, MLP(sinusoidal(t)))."""

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
        return self.t_mlp(timestep_embedding(t, self.t_dim).to(self.t_mlp[0].weight.dtype))  # float64 in tests

    def hidden(self, h, temb, **cond):
        """g: the residual blocks over h + temb. A subclass may read `cond` here (methods/cond.py)."""
        h = h + temb
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x_t, t, **cond):
        """x_t (B, D), t (B,) -> x0_hat (B, D)."""
        return self.out(self.hidden(self.inp(x_t), self.time(t), **cond))

    def sample_in_r(self, diffusion, x_T, *, steps, eta, randn, **cond):
        """The reverse chain of diffusion.py run in r dimensions: the same samples in distribution (and
        the same DDIM eta = 0 map from x_T), the final x0_hat (B, D) returned.

        Every step is linear in (x0_hat, x_t, z), x_s = a x0_hat + b x_t + c z, and this network reads
        x_t only through u = W_in x_t; with g(u, t) = hidden(u + b_in, MLP(sinusoidal(t))),
        x0_hat = W_out g + b_out, so u obeys
            u_s = a (M g(u_t, t) + m) + b u_t + c W_in z,   M = W_in W_out, m = W_in b_out,
        where W_in z ~ N(0, W_in W_in^T) is drawn as F xi, F F^T = W_in W_in^T, xi = randn(shape) ~ N(0, I_r).
        Only the last step, whose x0_hat is the sample, goes back to D dims: about D/r times fewer flops.
        """
        W_in, b_in = self.inp.weight, self.inp.bias
        M, m = W_in @ self.out.weight, W_in @ self.out.bias
        temb = self.time(torch.arange(diffusion.T + 1, device=x_T.device))  # once per run, not per step
        pairs = diffusion.timesteps(steps)
        F, u = None, x_T @ W_in.T  # F: made on the first noisy step (DDIM with eta = 0 needs none)
        for (t, s), (a, b, c) in zip(pairs, diffusion.step_coefficients(pairs, None if steps is None else eta)):
            g = self.hidden(u + b_in, temb[t], **cond)
            if s == 0:  # at s = 0 both samplers return x0_hat itself
                return self.out(g)
            if c > 0 and F is None:
                evals, V = torch.linalg.eigh(W_in.double() @ W_in.double().T)
                F = (V * evals.clamp(min=0).sqrt()).to(W_in.dtype)
            u = a * (g @ M.T + m) + b * u + (c * (randn(u.shape) @ F.T) if c > 0 else 0)


@register
class DDPT(PromptMethod):
    """The paper's method: contexts C + s * x0 with x0 drawn by a diffusion model from noise."""
    kind, title, lr, stochastic = "ddpt", "DDPT", 3e-5, True  # lr: see docs/results.md's sweep
    chain = None  # the DDIM steps sample() takes when not told (None: DDPM over all T; methods/mcl.py: its chain's)
    options = {
        "T": Option(2000, "diffusion steps", type=count),
        "schedule": Option("linear", "noise schedule", choices=("linear", "cosine", "sqrt")),
        "r": Option(512, "denoiser width (the intrinsic dimension)", type=count),
        "blocks": Option(2, "residual MLP blocks in the denoiser", type=int),
        "x0": Option("self", "x0 noised in training: own estimate, or the manual prompt (zero: the paper's)",
                     choices=("self", "zero")),
        "steps": Option(None, "DDIM over K steps, or all: DDPM over all T steps (default, the paper's)", type=steps_arg,
                        when="sample", flag="--sample-steps", metavar="K|all"),
        "eta": Option(0.0, "DDIM eta (0: deterministic)", type=float, when="sample"),
    }

    def __init__(self, C, s, *, T=2000, schedule="linear", r=512, blocks=2, x0="self"):
        super().__init__(C, s)
        if x0 not in ("self", "zero"):
            raise ValueError(f"unknown --x0 {x0!r}: use self or zero")
        self.x0_mode, self.D = x0, self.n * self.d
        self.diffusion = Diffusion(T, schedule)
        self.denoiser = self.make_denoiser(r=r, blocks=blocks)

    def make_denoiser(self, *, r, blocks):
        """The network called as denoiser(x_t (B, D), t (B,), **cond) -> x0_hat (B, D). Override it to
        fork DDPT; start it at x0_hat = 0, so that an untrained model is the manual prompt."""
        return Denoiser(self.D, r, blocks)

    def label(self, steps=None, eta=0.0):
        return f"{self.title} ({'DDPM-' + str(self.diffusion.T) if steps is None else f'DDIM-{steps}'})"

    def _randn(self, *shape, generator=None):
        # drawn on the CPU, so one seed gives the same noise on any device
        return torch.randn(*shape, generator=generator).to(self.C)  # its device and dtype

    def training_contexts(self, B, generator=None, score=None, **cond):
        """Half of a training step (the paper's Eq. 3 without the LLM): B prompt contexts. (score is
        not used: every draw here gets its own pair's loss; cond: a variant's denoiser keywords.)

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
                x0 = self.denoiser(self._randn(B, self.D, generator=generator), torch.full_like(t, self.diffusion.T),
                                   **cond)
        x_t = self.diffusion.q_sample(x0, t, eps)
        return self.prompt(self.denoiser(x_t, t, **cond))

    @torch.inference_mode()
    def sample(self, k, generator=None, steps=None, eta=0.0, fast=True):
        """k prompt contexts (k, n, d) from noise, the reverse process of diffusion.py:

            x_T ~ N(0, I);  for t = T..1:  x0_hat = denoiser(x_t, t),  x_{t-1} ~ q(x_{t-1} | x_t, x0_hat)

        DDPM over all T steps (steps=None, the paper's) or DDIM-K; context = C + s * x0_hat of the
        last step.
        """
        return self.prompt(self.reverse(self._randn(k, self.D, generator=generator), steps=steps, eta=eta,
                                        generator=generator, fast=fast))

    def reverse(self, x_T, *, steps=None, eta=0.0, generator=None, fast=True, **cond):
        """x0 (B, D) at the end of the reverse chain from x_T (B, D). fast=True runs the very same chain
        in r dimensions when the denoiser offers it (`Denoiser.sample_in_r`; tests/test_ddpt.py holds
        the two equal), the plain one of `Diffusion.sample` otherwise."""
        steps = self.chain if steps is None else steps
        if fast and hasattr(self.denoiser, "sample_in_r"):
            return self.denoiser.sample_in_r(self.diffusion, x_T, steps=steps, eta=eta, **cond,
                                             randn=lambda shape: self._randn(*shape, generator=generator))
        return self.diffusion.sample(lambda x, t: self.denoiser(x, t, **cond), x_T, steps=steps, eta=eta,
                                     generator=generator)
