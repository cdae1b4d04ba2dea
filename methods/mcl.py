"""DDPT-MCL: a DDPT whose noise matters, trained through its own sampler with multiple-choice learning.

The paper's objective (Eq. 3) asks every noise draw for the same thing, the one prompt that lowers
the LLM's loss most, so the draws collapse onto it (README: their cosine is 1.0000). Here the
denoiser is trained as what sample.py uses it for, a map from noise to a prompt, and K draws per
training pair compete for it (multiple-choice learning, Guzman-Rivera et al. 2012):

    x_T^k ~ N(0, I), k = 1..K             x0^k = the DDIM-S chain from x_T^k (eta = 0, S steps)
    L_ik = the LLM's loss of pair i under the context C + s x0^k (summed over its code tokens)

    winner-takes-all (relax = 0):   L = sum_i min_k L_ik
    relaxed (relax = e > 0):        L = sum_i (1 - e) L_i,win + e / (K - 1) sum_{k != win} L_ik    (Rupprecht et al. 2017)
    likelihood bound:               L = - sum_i log (1/K) sum_k exp(-L_ik)                        (IMLE-like, Li and Malik 2018)

Every one of them has the gradient sum_ik w_ik grad L_ik, with weights w_i over the K draws fixed by
the losses: the winner's one-hot, the relaxed one-hot, or the posterior w_ik = softmax_k(-L_ik).
So a step scores the K draws without gradients (K LLM forwards), draws one k per pair from w_i (the
winner, for the one-hot) and back-propagates that draw's loss alone (one forward and backward): an
unbiased estimate of the objective's gradient, at the cost of a DDPT step plus K no-grad forwards.
Gradients reach the denoiser through the whole chain, or with truncate = m through its last m steps
only (as DRaFT does, Clark et al. 2024). sample.py draws with the same chain (the checkpoint keeps S).
"""
import torch
from torch import nn

from ddpt import DDPT
from prompts import Option, count, register

OBJECTIVES = ("wta", "likelihood")


@register
class DDPTMCL(DDPT):
    kind, title, lr, stochastic = "ddpt-mcl", "DDPT-MCL", 3e-5, True
    options = {
        "x0": None,  # no clean x0 is noised here: the chain starts from pure noise
        "K": Option(5, "draws competing per training pair", type=count),
        "chain": Option(10, "DDIM steps of the chain it is trained through (and sampled with)", type=count),
        "objective": Option("wta", "winner-takes-all, or the K-sample likelihood bound", choices=OBJECTIVES),
        "relax": Option(0.0, "wta: weight shared by the K - 1 losing draws (0: hard)", type=float),
        "truncate": Option(None, "back-propagate through the chain's last steps only", type=count),
    }

    def __init__(self, C, s, *, T=2000, K=5, chain=10, objective="wta", relax=0.0, truncate=None, **denoiser):
        super().__init__(C, s, T=T, **denoiser)  # the DDPT's own: schedule, r, blocks
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown --objective {objective!r}: use {' or '.join(OBJECTIVES)}")
        if not 1 <= chain <= T:
            raise ValueError(f"--chain must be between 1 and T = {T}, got {chain}")
        if not 0 <= relax < 1:
            raise ValueError(f"--relax must be in [0, 1), got {relax}")
        if truncate is not None and not 1 <= truncate <= chain:
            raise ValueError(f"--truncate must be between 1 and --chain = {chain}, got {truncate}")
        self.K, self.chain, self.objective, self.relax, self.truncate = K, chain, objective, relax, truncate

    def label(self, steps=None, eta=0.0):
        return f"{self.title} (DDIM-{steps or self.chain})"

    def chain_x0(self, x_T, **cond):
        """x0 from the DDIM-S chain (eta = 0), differentiable in the denoiser through its last
        `truncate` steps (all, if None); the earlier steps run without gradients. cond: the denoiser's
        keywords (cond.py's condition c)."""
        walk = self.diffusion.trajectory(lambda x, t: self.denoiser(x, t, **cond), x_T, steps=self.chain, eta=0.0)
        next(walk)  # (T, x_T): nothing computed yet
        with torch.no_grad():
            for _ in range(self.chain - (self.truncate or self.chain)):
                next(walk)
        for _, x in walk:
            pass
        return x

    def weights(self, L):
        """w (K, B): each pair's weights over its K draws, from their losses L (K, B)."""
        if self.objective == "likelihood":
            return torch.softmax(-L.double(), 0)
        win = nn.functional.one_hot(L.argmin(0), self.K).T.double()
        return win if self.K == 1 else (1 - self.relax) * win + self.relax / (self.K - 1) * (1 - win)

    def training_contexts(self, B, generator=None, score=None, *, c=None):  # c (B, r): cond.py's condition
        """B contexts (B, n, d) with gradients: for each pair, one of its K chain draws, picked by the
        objective's weights from score(contexts (B, n, d)) -> the B pairs' summed losses. Without a
        score (no LLM at hand), the first draw. c (B, r): cond.py's condition of each pair, if any."""
        K = self.K if score is not None else 1
        x_T = self._randn(K * B, self.D, generator=generator)
        cond = {} if c is None else {"c": c.repeat(K, 1)}  # draw k of pair i is row k * B + i
        contexts = self.prompt(self.chain_x0(x_T, **cond)).view(K, B, self.n, self.d)
        if score is None:
            return contexts[0]
        with torch.no_grad():
            L = torch.stack([score(contexts[k]).to(contexts.device) for k in range(K)])
        pick = torch.multinomial(self.weights(L).T.cpu(), 1, generator=generator).squeeze(1).to(contexts.device)
        return contexts[pick, torch.arange(B, device=contexts.device)]
