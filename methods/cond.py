"""DDPT-Cond: a denoiser that reads the instruction, so each instruction gets its own prompts.

The paper's denoiser sees only noise and a timestep, so the best it can learn is one prompt for every
instruction. Here it also reads a frozen summary f(q) of the instruction q (`llm.instruction_features`): the mean of
the encoder's states over the instruction's tokens for an encoder-decoder LLM (CodeT5+, the tiny
T5), the mean of its input embeddings for a decoder-only one (SmolLM2). The summary enters the
hidden state beside the timestep (IDPG, Wu et al. 2022; LoPA, Jain et al. 2024 make prompts from
the instruction in the same spirit):

    h = W_in x_t + b_in + MLP(sinusoidal(t)) + c,     c = W_c LN(f(q)) + b_c       (GuidedDenoiser, c=)

LN without its own scale or shift (only the direction of f counts, for any LLM's scale); W_c and
b_c start at zero, so an untrained DDPT-Cond is still exactly the manual prompt (as W_out is zero,
any c would be, but c = 0 keeps the untrained denoiser the unconditional one too).

Classifier-free guidance (Ho and Salimans 2022): in training each pair's c is replaced, with
probability p_uncond, by a learned null vector c_null (zero at first), so one denoiser learns both
x0_hat(x_t, t, q) and x0_hat(x_t, t, null). Sampling with a guidance weight w uses

    x0_hat_w = (1 + w) x0_hat(x_t, t, q) - w x0_hat(x_t, t, null)       (w = 0: the conditional model)

which keeps the fast r-dimensional sampler exact: x0_hat = W_out g + b_out is affine in the hidden
state g, so x0_hat_w = W_out((1 + w) g_q - w g_null) + b_out: `GuidedDenoiser.hidden` returns that
mixed g, and ddpt.Denoiser.sample_in_r runs it unchanged. Every instruction's k draws start from the same k noises x_T: with DDIM at
eta = 0 (DDPT-MCL's chain) draw j is one and the same noise for all pairs; DDPM adds fresh noise per
row at every step, so there only the start is shared.

Two registered methods: ddpt-cond (the paper's objective, Eq. 3, with the condition) and
ddpt-mcl-cond (mcl.py's training through the chain, with the condition).
"""
import torch
from torch import nn

from ddpt import DDPT, Denoiser
from methods.mcl import DDPTMCL
from prompts import Option, register


class Condition(nn.Module):
    """c = W_c LN(f) + b_c (zero at init); with probability p_uncond (training only) the learned null."""

    def __init__(self, d, r, p_uncond):
        super().__init__()
        self.ln, self.proj = nn.LayerNorm(d, elementwise_affine=False), nn.Linear(d, r)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.null = nn.Parameter(torch.zeros(r))
        self.p_uncond = p_uncond

    def forward(self, f, generator=None):
        c = self.proj(self.ln(f.to(self.null)))
        if generator is None or self.p_uncond == 0:
            return c
        drop = (torch.rand(len(f), generator=generator) < self.p_uncond).to(c.device).unsqueeze(1)
        return torch.where(drop, self.null.expand_as(c), c)


class GuidedDenoiser(Denoiser):
    """ddpt.Denoiser whose hidden state reads a condition c (B, r) beside the timestep; with a null
    condition and a weight w, the guided g_w = (1 + w) g(c) - w g(null), which x0_hat is affine in."""

    def hidden(self, h, temb, c=None, null=None, w=0.0):
        g = super().hidden(h, temb if c is None else temb + c)
        return g if w == 0 else (1 + w) * g - w * super().hidden(h, temb + null)


class Conditioned:
    """What DDPT-Cond adds to a DDPT class (the first base of ddpt-cond and ddpt-mcl-cond)."""
    conditional = True  # train.py and sample.py hand it the features of the instructions
    options = {
        "p_uncond": Option(0.1, "share of pairs trained with the null condition (guidance)", type=float),
        "w": Option(0.0, "classifier-free guidance weight w (0: the conditional model)", type=float, when="sample",
                    flag="--guidance", suffix="w"),
    }

    def __init__(self, C, s, *, p_uncond=0.1, r=512, **rest):
        super().__init__(C, s, r=r, **rest)
        if not 0 <= p_uncond < 1:
            raise ValueError(f"--p-uncond must be in [0, 1), got {p_uncond}")
        self.condition = Condition(self.d, r, p_uncond)

    def make_denoiser(self, *, r, blocks):
        return GuidedDenoiser(self.D, r, blocks)

    def training_contexts(self, B, generator=None, score=None, features=None):
        """B contexts for the B pairs whose instructions have the features (B, d); the condition is
        dropped to the null with probability p_uncond, drawn from the step's generator."""
        if features is None or len(features) != B:
            raise ValueError(f"{self.kind} needs the features of the batch's {B} instructions (llm.instruction_features)")
        return super().training_contexts(B, generator, score, c=self.condition(features, generator))

    @torch.inference_mode()
    def sample(self, k, generator=None, steps=None, eta=0.0, fast=True, *, features=None, w=0.0):
        """k contexts for each of N instructions (k, N, n, d), guided with weight w (0: conditional)."""
        if features is None:
            raise ValueError(f"{self.kind} draws prompts for instructions: pass their features (llm.instruction_features)")
        N = len(features)
        x_T = self._randn(k, self.D, generator=generator).repeat_interleave(N, 0)  # row j * N + i: draw j, pair i
        c = self.condition(features).repeat(k, 1)
        x0 = self.reverse(x_T, steps=steps, eta=eta, generator=generator, fast=fast, c=c, null=self.condition.null, w=w)
        return self.prompt(x0).view(k, N, self.n, self.d)

    def label(self, w=0.0, **sampler):
        return super().label(**sampler) + (f", w {w:g}" if w else "")


@register
class DDPTCond(Conditioned, DDPT):
    kind, title = "ddpt-cond", "DDPT-Cond"


@register
class DDPTMCLCond(Conditioned, DDPTMCL):
    kind, title = "ddpt-mcl-cond", "DDPT-MCL-Cond"
