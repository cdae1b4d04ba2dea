"""methods/ddpt_pd.py: per-instance prompts from optimised targets (DDPT-PD and its regressor control)."""
import json
import math

import pytest
import torch

import data
import llm
import sample
import train
from methods.ddpt_pd import DDPTPD, DDPTPDRegressor, overfit
from runtime import checkpoint


@pytest.mark.parametrize("Method", [DDPTPD, DDPTPDRegressor])
def test_unfitted_is_the_shared_prompt_exactly(Method):
    torch.manual_seed(0)
    module = Method(torch.randn(2, 3), 0.5, r=8)
    with torch.no_grad():
        module.context.add_(torch.randn(2, 3))  # P, as the loop leaves it
    f = torch.randn(5, 3) * 10
    assert torch.equal(module.training_contexts(5, torch.Generator().manual_seed(1), None, f), module.context)
    assert torch.equal(module.sample(3, torch.Generator().manual_seed(2), features=f), module.context.expand(3, 5, -1, -1))


def test_the_shared_prompt_is_soft_prompt_tunings_and_the_targets_are_cached(cache, tmp_path):
    """Stage 1 with the same seed and rate is the prompt-tuning checkpoint's context; both learners of a
    seed read one targets file; the log has each fit; sample.py scores the regressor, the draws, their
    picks and the oracle, and compares them."""
    out = tmp_path / "run"
    train.main(["--out", str(out), "--method", "prompt-tuning", "ddpt-pd", "ddpt-pd-mlp", "--batch-size", "4",
                "--steps", "3", "--eval-every", "3", "--pd-pairs", "12", "--pd-steps", "2", "--fit-steps", "20",
                "--r", "16", "--T", "50"])
    soft, pd, mlp = (checkpoint.load(out / "seed0" / f"{m}.pt") for m in ("prompt-tuning", "ddpt-pd", "ddpt-pd-mlp"))
    assert torch.equal(pd["weights"]["context"], soft["weights"]["context"])
    assert torch.equal(mlp["weights"]["context"], soft["weights"]["context"])
    assert bool(pd["weights"]["fitted"]) and pd["config"]["pd_pairs"] == 12 and pd["weights"]["sigma"] > 0
    fits = [r["fit"] for r in map(json.loads, open(out / "seed0" / "log.jsonl")) if "fit" in r]
    assert len(fits) == 2 and fits[0]["cache"] == fits[1]["cache"] and fits[0]["pairs"] == 12
    assert len(list((out / "seed0" / "targets").glob("*.pt"))) == 1
    sample.main(["--out", str(out), "--limit", "6", "--k", "2", "--max-new-tokens", "8", "--select-pairs", "8"])
    res = json.load(open(out / "results.json"))
    rows = {r["method"] for r in res["per_seed"]["0"]}
    assert {"DDPT-PD regressor", "DDPT-PD (DDIM-50) top-1", "DDPT-PD (DDIM-50) selected",
            "DDPT-PD oracle delta (fit to each reference)"} <= rows
    compared = {(t["a"], t["b"]) for t in res["paired_bootstrap"]}
    assert {("DDPT-PD (DDIM-50) top-1", "DDPT-PD regressor"), ("DDPT-PD regressor", "soft prompt tuning"),
            ("DDPT-PD oracle delta (fit to each reference)", "soft prompt tuning")} <= compared
    train.main(["--out", str(out), "--resume", "--method", "prompt-tuning", "ddpt-pd", "ddpt-pd-mlp", "--batch-size",
                "4", "--steps", "3", "--eval-every", "3", "--pd-pairs", "12", "--pd-steps", "2", "--fit-steps", "20",
                "--r", "16", "--T", "50"])  # fitted already: nothing is done again
    assert torch.equal(checkpoint.load(out / "seed0" / "ddpt-pd.pt")["weights"]["denoiser.out.weight"],
                       pd["weights"]["denoiser.out.weight"])


def test_targets_round_trip_through_their_cache(cache, tmp_path):
    model, tok = llm.load("tiny")
    examples, _ = data.encode(data.load("demo")["train"][:6], tok)
    C, s = llm.context_from_text(model, tok, "Write code:", 4)
    module = DDPTPDRegressor(C, s, r=8, pd_pairs=5, pd_steps=2)
    first = module.targets(model, tok, examples, generator=torch.Generator().manual_seed(0), cache=str(tmp_path))
    again = module.targets(model, tok, examples, generator=torch.Generator().manual_seed(0), cache=str(tmp_path))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1]) and first[3] == again[3]
    assert len(list((tmp_path / "targets").iterdir())) == 1 and first[1].shape == (5, 4 * C.shape[1])
    assert math.isclose(first[1].pow(2).mean().item(), 1.0, rel_tol=1e-5)  # x0 = delta / sigma: unit RMS
    other = DDPTPDRegressor(C, s, r=8, pd_pairs=5, pd_steps=3)
    other.targets(model, tok, examples, generator=torch.Generator().manual_seed(0), cache=str(tmp_path))
    assert len(list((tmp_path / "targets").iterdir())) == 2  # another budget: another file, never the old one


def test_each_pairs_target_is_what_it_would_be_alone(cache):
    """Stage 2 optimises a batch of pairs at once; their objectives are separate and each step is
    normalised by the pair's own gradient, so each delta is the one optimised for its pair alone (up to
    rounding, which the steps amplify: few and small ones here), of RMS at most steps * lr, and it
    lowers that pair's loss."""
    model, tok = llm.load("tiny")
    examples, _ = data.encode(data.load("demo")["train"][:4], tok)
    C, s = llm.context_from_text(model, tok, "Write code:", 4)
    together, before, after = overfit(model, tok, C, s, examples, steps=3, lr=0.02, penalty=1.0, batch_size=4)
    alone = torch.cat([overfit(model, tok, C, s, [e], steps=3, lr=0.02, penalty=1.0)[0] for e in examples])
    assert (together - alone).abs().max() < 1e-3 * together.abs().max() and together.abs().max() > 0.05
    assert (together.flatten(1).pow(2).mean(1).sqrt() <= 3 * 0.02 + 1e-6).all()
    assert all(a < b for a, b in zip(after, before))


class GaussianX0(torch.nn.Module):
    """The exact x0-denoiser of x0 ~ N(mu, sd^2 I): E[x0 | x_t] (mu (B, D) per row: the condition's mean)."""

    def __init__(self, dif, mu, sd):
        super().__init__()
        self.dif, self.mu, self.sd = dif, mu, sd

    def forward(self, x_t, t, c=None, null=None, w=0.0):
        a, ab = self.dif.sqrt_abar[t][:, None].to(x_t), self.dif.abar[t][:, None].to(x_t)
        return self.mu + a * self.sd ** 2 / (ab * self.sd ** 2 + 1 - ab) * (x_t - a * self.mu)


def test_the_conditional_sampler_has_the_right_moments():
    """With the exact denoiser of a per-instruction Gaussian, DDPT-PD's draws for each instruction have
    its mean and spread, mapped to contexts P + s sigma x0: the DDPM chain (all T steps, eta 1) and the
    ODE (DDIM eta 0, T steps) to 10%; the default few-step chain (DDIM-50 of T = 2000) keeps the mean
    and at least 90% of the spread (DDIM-10 keeps 62%: why the chain is 50)."""
    k, sd, scale = 3000, 0.3, 0.5 * 2.0  # s sigma
    mus = torch.tensor([[1.0, -1.0], [0.0, 2.0]], dtype=torch.float64)  # instruction i's mean of x0
    f = torch.randn(2, 2, dtype=torch.float64)
    for T, steps, eta, spread in ((200, 200, 1.0, 0.1), (200, 200, 0.0, 0.1), (2000, None, 0.0, None)):
        module = DDPTPD(torch.zeros(1, 2), 0.5, T=T, r=4).double()
        module.sigma.fill_(2.0)
        module.denoiser = GaussianX0(module.diffusion, mus.repeat(k, 1), sd)  # row j * N + i: draw j, instruction i
        x = module.sample(k, torch.Generator().manual_seed(1), steps=steps, eta=eta, features=f, fast=False).view(k, 2, 2)
        assert torch.allclose(x.mean(0), scale * mus, atol=5 * scale * sd / math.sqrt(k))
        ratio = x.std(0) / (scale * sd)
        assert ((ratio - 1).abs() < spread).all() if spread else ((ratio > 0.9) & (ratio < 1.05)).all(), (T, steps, ratio)


@pytest.mark.parametrize("Method", [DDPTPD, DDPTPDRegressor])
def test_each_learner_fits_a_per_instance_target(Method):
    """A toy problem: the target of each instruction is a fixed non-linear function of its features.
    Both learners recover it on held-out instructions (one DDIM draw for DDPT-PD: with one target per
    instruction the conditional distribution is a point)."""
    torch.manual_seed(0)
    d, n = 6, 2
    f = torch.randn(600, d)
    A = torch.randn(d, n * d)
    x0 = torch.tanh(f @ A / math.sqrt(d))
    x0 = x0 / x0.pow(2).mean().sqrt()
    module = Method(torch.zeros(n, d), 1.0, r=64, fit_steps=3000, fit_lr=1e-3)
    report = module.learn(x0[:500], f[:500], torch.Generator().manual_seed(0))
    assert report["held_out_explained"] > 0.6, report  # (0: the shared prompt; the regressor reaches 0.83)
    with torch.no_grad():
        x0_hat = module.predict(f[500:], torch.Generator().manual_seed(1))
    assert 1 - (x0_hat - x0[500:]).pow(2).sum() / x0[500:].pow(2).sum() > 0.6  # instructions it never saw
    assert bool(module.fitted)
