"""DDPT-PD: per-instance prompts learned from a data set of optimised ones (after Prompt Diffusion,
Du et al. 2024, arXiv 2410.20164).

The paper's objective (Eq. 3) is minimised by one constant prompt, so DDPT's draws collapse. Here the
diffusion model is given a real distribution to learn: prompts optimised for each training pair, in
three stages, each from the one before:

1. the shared prompt  P (n, d): soft prompt tuning, train.py's loop (with the same seed and rate it is
                      the very prompt-tuning checkpoint's context: tests/test_ddpt_pd.py)
2. the targets        for training pair i, from delta = 0, `pd_steps` normalised gradient steps on its own loss

                          delta_i ~ argmin_delta  CE(y_i | [P + s delta ; q_i]) + lambda |delta|^2 / D

                      bounded by the step budget and the penalty toward P (so that delta_i is a
                      nudge, not the answer written into the prompt); cached in the seed folder
3. a learner of delta given the instruction's frozen features f(q) (llm.instruction_features), on
   x0_i = delta_i / sigma, sigma the targets' RMS (unit scale, as diffusion assumes):

   ddpt-pd (DDPTPD)        a conditional diffusion model, cond.py's: x0-prediction as in ddpt.py,
                           L = E_{i, t, eps} |x0_hat(x_t, t, c_i) - x0_i|^2,   x_t = sqrt(abar_t) x0_i + sqrt(1 - abar_t) eps,
                           c_i = W_c LN(f(q_i)) + b_c, dropped to the null with probability p_uncond
                           (classifier-free guidance, --guidance w); sampled with DDIM in `chain` steps
   ddpt-pd-mlp (Regressor) the deterministic control: x0_hat = MLP(LN f(q)), L = |x0_hat - x0_i|^2

   context = P + s sigma x0_hat            (x0_hat = 0 before stage 3: the shared prompt exactly)

Each learner keeps the weights of its best held-out loss on a tenth of the targets it never trains on.
Stage 2 and 3 run after the loop (train.py calls `fit`); a second method of the same seed and
settings reads the cached targets. At test time `oracle` runs stage 2 on the test pairs with their
references: the gain no deployed system could have, the ceiling of any prompt of this kind.
"""
import hashlib
import os
import time

import torch
from torch import nn
from tqdm import tqdm

import data
import llm
from ddpt import DDPT, Block
from methods.cond import Conditioned
from prompts import Option, PromptMethod, count, register
from runtime import checkpoint


def overfit(model, tok, P, s, examples, *, steps, lr, penalty, batch_size=32, desc="targets"):
    """delta (N, n, d), each pair's own direction from P after `steps` normalised gradient steps on its
    own mean token loss plus the penalty, from delta = 0:

        J_i(delta) = CE(y_i | [P + s delta ; q_i]) + penalty |delta|^2 / D
        delta <- delta - lr g / rms(g),   g = grad J_i(delta)

    so each step moves a pair's delta by RMS lr whatever its loss's scale: |delta|_rms <= steps * lr
    (in units of s, a token's size). (Adam would move every coordinate by about lr at its first step,
    the ones whose gradient is rounding noise too: targets full of noise.) Also each pair's mean
    token loss under P and under its P + s delta. Pairs go a batch at a time; their J_i are separate
    and each is normalised by its own gradient, so a pair's delta is what it would be alone (up to
    rounding, which the steps amplify)."""
    out, before, after = [], [], []
    for b in tqdm(data.batches(examples, batch_size, tok), total=-(-len(examples) // batch_size), desc=desc, leave=False):
        delta = torch.zeros(len(b["labels"]), *P.shape, device=P.device, requires_grad=True)
        for j in range(steps + 1):
            ce, real = llm.token_losses(model, P + s * delta, b)
            own = ce.sum(1) / real.sum(1)  # each pair's mean token loss
            (before if j == 0 else after if j == steps else []).extend(own.tolist())
            if j == steps:
                break
            g, = torch.autograd.grad((own + penalty * delta.pow(2).flatten(1).mean(1)).sum(), delta)
            with torch.no_grad():
                delta -= lr * g / g.pow(2).flatten(1).mean(1).sqrt().clamp(min=1e-20).view(-1, 1, 1)
        out.append(delta.detach().float())
    return torch.cat(out), before, after


class Regressor(nn.Module):
    """x0_hat = W_out blocks(W_in LN(f) + b_in) + b_out, W_out and b_out zero: 0 before it is fitted."""

    def __init__(self, d, D, r, blocks):
        super().__init__()
        self.ln, self.inp = nn.LayerNorm(d, elementwise_affine=False), nn.Linear(d, r)
        self.blocks = nn.Sequential(*(Block(r) for _ in range(blocks)))
        self.out = nn.Linear(r, D)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, f):
        return self.out(self.blocks(self.inp(self.ln(f))))


class PerInstance:
    """What both learners share: the shared prompt P trained by train.py's loop, the targets, the fit."""
    lr, conditional = 3e-2, True  # lr: the loop's, soft prompt tuning's (stage 1 is that method)
    options = {
        "pd_pairs": Option(1024, "training pairs given an optimised per-instance target", type=count),
        "pd_steps": Option(20, "normalised gradient steps on each pair's own loss (the targets' budget)", type=count),
        "pd_lr": Option(0.05, "the RMS of each step, in units of s (the embedding table's RMS)", type=float),
        "pd_penalty": Option(1.0, "lambda of the penalty lambda |delta|^2 / D toward the shared prompt", type=float),
        "fit_steps": Option(2000, "steps of the learner of the targets", type=count),
        "fit_lr": Option(1e-3, "its AdamW rate", type=float),
    }

    def __init__(self, C, s, *, pd_pairs=1024, pd_steps=20, pd_lr=0.05, pd_penalty=1.0, fit_steps=2000, fit_lr=1e-3,
                 **rest):
        super().__init__(C, s, **rest)
        self.context = nn.Parameter(self.C.clone())  # P, as a soft prompt starts
        self.register_buffer("sigma", torch.ones(()))  # the targets' RMS (1 until fitted)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.targets_cfg = dict(pairs=pd_pairs, steps=pd_steps, lr=pd_lr, penalty=pd_penalty)
        self.fit_steps, self.fit_lr = fit_steps, fit_lr

    def training_contexts(self, B, generator=None, score=None, features=None):
        """Stage 1, in train.py's loop: the shared prompt P, soft prompt tuning's context."""
        return self.context

    def prompt(self, x0):
        """context = P + s sigma x0_hat, for x0_hat (B, n*d) in the targets' unit scale."""
        return self.context + self.s * self.sigma * x0.view(-1, self.n, self.d)

    def directions(self, contexts):
        return ((contexts - self.context) / (self.s * self.sigma)).flatten(-2)

    def targets(self, model, tok, examples, *, generator, cache):
        """Stage 2 for `pd_pairs` training pairs drawn by the generator: (their indices, x0 = delta /
        sigma (N, D), sigma, a report). Cached in `cache`/targets/ (the seed folder's) under a name from P, the pairs
        and the settings, so a second method of this seed reads them."""
        cfg, index = self.targets_cfg, torch.randperm(len(examples), generator=generator)[:self.targets_cfg["pairs"]]
        key = hashlib.sha256(self.context.detach().cpu().double().numpy().tobytes()
                             + repr(sorted(cfg.items()) + index.tolist()).encode()).hexdigest()[:16]
        path = os.path.join(cache, "targets", f"{key}.pt") if cache else None  # (None: another rank's to write)
        if path and os.path.exists(path):
            got = checkpoint.load(path)
        else:
            t0 = time.perf_counter()
            delta, before, after = overfit(model, tok, self.context.detach(), self.s, [examples[i] for i in index],
                                           steps=cfg["steps"], lr=cfg["lr"], penalty=cfg["penalty"])
            got = {"delta": delta.cpu(), "before": before, "after": after, "secs": time.perf_counter() - t0}
            if path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                checkpoint.save(got, path)
        delta = got["delta"].to(self.context)
        sigma = delta.pow(2).mean().sqrt().clamp(min=1e-12)
        mean = lambda xs: sum(xs) / len(xs)
        report = {"pairs": len(index), "secs": got["secs"], "loss_shared": mean(got["before"]),
                  "loss_own": mean(got["after"]), "delta_rms": sigma.item(), "cache": path}
        return index, (delta / sigma).flatten(1), sigma, report

    def fit(self, *, model, tok, examples, features, generator, cache):
        """Stages 2 and 3 after train.py's loop. Returns what it found (for the log), or None if this
        module is fitted already (a resumed run)."""
        if self.fitted:
            return None
        index, x0, sigma, report = self.targets(model, tok, examples, generator=generator, cache=cache)
        self.sigma.fill_(sigma.item())
        return report | self.learn(x0, features[index].to(x0), generator)

    def learn(self, x0, f, generator):
        """Stage 3: the learner on the targets x0 (N, D) of the instructions with features f (N, d), the
        first tenth held out; keeps the weights of its best held-out loss (checked every 100 steps)."""
        cut = max(1, len(x0) // 10)
        held = slice(0, cut)
        params = list(self.learner().parameters())
        opt = torch.optim.AdamW(params, lr=self.fit_lr, weight_decay=0.0)
        best, t0 = (float("inf"), None, 0), time.perf_counter()
        bar = tqdm(range(self.fit_steps), desc=f"{self.kind}: fitting the targets", leave=False)
        for i in bar:
            idx = torch.randint(len(x0) - cut, (min(64, len(x0) - cut),), generator=generator) + cut
            loss = self.fit_loss(x0[idx], f[idx], generator)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if (i + 1) % 100 == 0 or i + 1 == self.fit_steps:
                with torch.no_grad():  # the same noise at every check, so the checks compare
                    held_loss = self.fit_loss(x0[held], f[held], torch.Generator().manual_seed(0)).item()
                bar.set_postfix(held_out=f"{held_loss:.4f}")
                if held_loss < best[0]:
                    best = (held_loss, {k: v.detach().clone() for k, v in self.learner().state_dict().items()}, i + 1)
        self.learner().load_state_dict(best[1])
        self.fitted.fill_(True)
        with torch.no_grad():  # the share of the held-out targets' square one prediction explains (0: P itself)
            x0_hat = self.predict(f[held], torch.Generator().manual_seed(0))
            explained = 1 - (x0_hat - x0[held]).pow(2).sum().item() / x0[held].pow(2).sum().item()
        return {"fit_secs": time.perf_counter() - t0, "held_out_loss": best[0], "best_step": best[2],
                "held_out_explained": explained, "train_loss_last": loss.item()}


@register
class DDPTPD(PerInstance, Conditioned, DDPT):
    """Stage 3 by cond.py's conditional diffusion model, sampled with DDIM in `chain` steps."""
    kind, title, stochastic = "ddpt-pd", "DDPT-PD", True
    chain = 50  # the DDIM steps sample() takes when not told: 92% of a Gaussian's spread (DDIM-10: 62%; tests)
    options = {"x0": None}  # the x0 noised is the target's

    def learner(self):
        return nn.ModuleList([self.denoiser, self.condition])

    def fit_loss(self, x0, f, generator):
        """Mean over the batch of |x0_hat(x_t, t, c) - x0|^2 / D."""
        t = torch.randint(1, self.diffusion.T + 1, (len(x0),), generator=generator).to(x0.device)
        x_t = self.diffusion.q_sample(x0, t, self._randn(*x0.shape, generator=generator))
        return (self.denoiser(x_t, t, c=self.condition(f, generator)) - x0).pow(2).mean()

    def predict(self, f, generator):
        """One draw per instruction from the DDIM chain (eta 0): x0_hat (N, D)."""
        c = self.condition(f)
        return self.reverse(self._randn(len(f), self.D, generator=generator), c=c, null=self.condition.null)

    def label(self, steps=None, eta=0.0, w=0.0):
        return f"{self.title} (DDIM-{steps or self.chain})" + (f", w {w:g}" if w else "")

    def oracle(self, model, tok, examples):
        """(its row's name, contexts (N, n, d)): stage 2 on the test pairs, each with its own reference."""
        delta, _, _ = overfit(model, tok, self.context.detach(), self.s, examples, desc="oracle",
                              **{k: v for k, v in self.targets_cfg.items() if k != "pairs"})
        return f"{self.title} oracle delta (fit to each reference)", self.context.detach() + self.s * delta


@register
class DDPTPDRegressor(PerInstance, PromptMethod):
    """Stage 3 by a deterministic MLP: the control, so that a gain is credited to the diffusion or to the conditioning."""
    kind, title, control = "ddpt-pd-mlp", "DDPT-PD regressor", True
    options = {name: DDPT.options[name] for name in ("r", "blocks")}  # its width and depth, as the denoiser's

    def __init__(self, C, s, *, r=512, blocks=2, **rest):
        super().__init__(C, s, **rest)
        self.regressor = Regressor(self.d, self.n * self.d, r, blocks)

    def learner(self):
        return self.regressor

    def fit_loss(self, x0, f, generator=None):
        return (self.regressor(f) - x0).pow(2).mean()

    def predict(self, f, generator=None):
        return self.regressor(f)

    @torch.inference_mode()
    def sample(self, k, generator=None, *, features=None):
        """One prompt per instruction, (k, N, n, d) with the k copies equal."""
        if features is None:
            raise ValueError(f"{self.kind} makes a prompt per instruction: pass their features (llm.instruction_features)")
        return self.prompt(self.regressor(features.to(self.context))).expand(k, -1, -1, -1).clone()
